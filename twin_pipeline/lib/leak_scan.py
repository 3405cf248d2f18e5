"""Leak scanner: search everything downstream of the privacy boundary for the raw identifiers of deliveries.

Plain functions, no Dagster import (the Dagster event log is passed in as an object with
``get_runs()`` / ``all_logs(run_id)``, i.e. a ``DagsterInstance``).

1. ``collect_identifiers(delivery_dirs)`` reads the landing area (PHI zone, in memory only): the
   identifier columns of ``ehr/patients.csv``, the REDCap fields flagged ``Identifier? = y``, the
   waveform manifest's record names and device serials, the ``.hea`` file names and the values of
   identifier keys in WFDB header comments ("patient: … mrn: … dob: …").
2. Each identifier is matched in two forms: as a case-folded token sequence (word-bounded, any
   separators of at most 3 characters between tokens; Synthea's trailing digits stripped from
   names) and, for SSN / phone / MRN, digits only whatever the separators.
3. ``scan_warehouse`` / ``scan_files`` / ``scan_mlflow`` / ``scan_dagster`` return a ``ScanReport``:
   hit counts by (location, kind). A location names a table.column, a path (components that hold an
   identifier are replaced by ``[REDACTED]``), an MLflow field or a Dagster event type — never a value.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from twin_pipeline.lib.deid import COMMON_WORD_NAMES

__all__ = [
    "IdentifierSet",
    "ScanReport",
    "collect_identifiers",
    "identifiers_from_patients",
    "scan_dagster",
    "scan_files",
    "scan_mlflow",
    "scan_warehouse",
]

REDACTED = "[REDACTED]"

_TOKEN_RE = re.compile(r"[^\W_]+")
_TRAILING_DIGITS_RE = re.compile(r"(?<=[^\W\d_])\d+$")
_DIGIT_GROUP_RE = re.compile(r"\d+")
_DIGIT_RUN_RE = re.compile(r"\d+(?:[ \t\-.()/+]{1,3}\d+)*")
_PHONE_EXT_RE = re.compile(r"(?i)\s*(?:x|ext\.?|extension)\s*\d{1,6}\s*$")
_ISO_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_MAX_GAP = 3

#: patients.csv column -> identifier kind (Synthea columns + the generator's MRN / PHONE)
PATIENT_COLUMNS: dict[str, str] = {
    "Id": "patient_id", "SSN": "ssn", "DRIVERS": "drivers_licence", "PASSPORT": "passport",
    "PREFIX": None, "FIRST": "name", "LAST": "name", "SUFFIX": None, "MAIDEN": "name",
    "BIRTHDATE": "birth_date", "DEATHDATE": "death_date", "BIRTHPLACE": "address", "ADDRESS": "address",
    "CITY": "address", "COUNTY": "address", "LAT": "geo", "LON": "geo",
    "MRN": "mrn", "PHONE": "phone",
}
# ZIP is not searched alone: a 5-digit number collides with LOINC / SNOMED codes (ZIP3 is released anyway)
#: kinds also matched digits-only (any separators)
DIGIT_KINDS = frozenset({"ssn", "phone", "mrn"})
#: WFDB header comment keys (case-folded, spaces -> _) whose values are identifiers
_COMMENT_KEYS: dict[str, str] = {
    "patient": "name", "name": "name", "patient_name": "name", "pt": "name", "full_name": "name",
    "mrn": "mrn", "medical_record_number": "mrn", "record_number": "mrn", "patient_id": "mrn",
    "dob": "birth_date", "date_of_birth": "birth_date", "birthdate": "birth_date", "birth_date": "birth_date",
    "born": "birth_date", "ssn": "ssn", "phone": "phone", "telephone": "phone", "tel": "phone",
    "address": "address", "email": "email",
}
_COMMENT_KV_RE = re.compile(r"([A-Za-z][A-Za-z_ ]{0,30}?)\s*[:=]\s*(.*?)(?=\s+[A-Za-z][A-Za-z_]{0,30}\s*[:=]|$)")
_TEXT_SUFFIXES = frozenset({".hea", ".csv", ".json", ".txt", ".yaml", ".yml", ".md", ".log", ".html", ".out",
                            ".err", ".tsv", ".xml", ".py", ".toml", ".cfg", ".ini", ""})
#: in binary files only identifiers with at least this many characters count (random bytes make short tokens)
BINARY_MIN_CHARS = 6


def _fold(text: str) -> str:
    return text.casefold()


@dataclass
class IdentifierSet:
    """Raw identifiers of the current deliveries, prepared for matching. Lives in memory only.

    ``phrases`` maps a first token to (token tuple, kind, n characters); ``digits`` maps a digit
    string to its kind. ``counts`` (identifiers collected by kind) is the only thing to report.
    """

    phrases: dict[str, list[tuple[tuple[str, ...], str, int]]] = field(default_factory=dict)
    digits: dict[str, str] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    _seen: set = field(default_factory=set, repr=False)

    def __repr__(self) -> str:  # never print identifiers
        return f"IdentifierSet({dict(self.counts)})"

    __str__ = __repr__

    @property
    def digit_lengths(self) -> frozenset[int]:
        return frozenset(len(d) for d in self.digits)

    def _phrase(self, tokens: tuple[str, ...], kind: str) -> None:
        if not tokens:
            return
        n_chars = sum(len(t) for t in tokens)
        if all(t.isdigit() for t in tokens):
            if n_chars < 5:  # short numbers are everywhere (counts, codes, REDCap record ids)
                return
        elif n_chars < 3 or (len(tokens) == 1 and kind in ("name", "address") and tokens[0] in COMMON_WORD_NAMES):
            return
        if (tokens, kind) in self._seen:
            return
        self._seen.add((tokens, kind))
        self.phrases.setdefault(tokens[0], []).append((tokens, kind, n_chars))

    def add(self, value: object, kind: str) -> None:
        """Add one raw identifier value (exact token form, plus name / digit / date variants)."""
        if value is None:
            return
        text = str(value).strip()
        if not text or text.lower() in ("nan", "none", "null"):
            return
        self.counts[kind] += 1
        toks = tuple(_fold(t) for t in _TOKEN_RE.findall(text))
        self._phrase(toks, kind)
        if kind == "name":
            stripped = tuple(_TRAILING_DIGITS_RE.sub("", t) for t in toks)
            self._phrase(stripped, kind)
            for t in set(toks) | set(stripped):
                if not t.isdigit():
                    self._phrase((t,), kind)
        if kind in DIGIT_KINDS:
            digits = re.sub(r"\D", "", _PHONE_EXT_RE.sub("", text) if kind == "phone" else text)
            if len(digits) >= 5:
                self.digits.setdefault(digits, kind)
                if kind == "phone" and len(digits) == 11 and digits.startswith("1"):
                    self.digits.setdefault(digits[1:], kind)
        if kind in ("birth_date", "death_date"):
            m = _ISO_DATE_RE.match(text)
            if m:
                self._phrase(("".join(m.groups()),), kind)

    def add_full_name(self, first: object, last: object) -> None:
        """The patient's full name as one phrase (catches common-word names such as "Will Young")."""
        parts = [str(x) for x in (first, last) if x is not None and str(x).strip() and str(x) != "nan"]
        if len(parts) == 2:
            toks = tuple(_TRAILING_DIGITS_RE.sub("", _fold(t)) for p in parts for t in _TOKEN_RE.findall(p))
            self._phrase(toks, "name")

    @property
    def empty(self) -> bool:
        return not (self.phrases or self.digits)

    # ---------------------------------------------------------------------------------------------
    def hits(self, text: str, *, min_chars: int = 0) -> Counter:
        """Kinds of identifiers occurring in ``text`` (count per kind). Never returns values."""
        found: Counter = Counter()
        if not text:
            return found
        toks = [(m.start(), m.end(), _fold(m.group())) for m in _TOKEN_RE.finditer(text)]
        n = len(toks)
        for i, (_s, _e, low) in enumerate(toks):
            cands = self.phrases.get(low)
            if cands is None:
                stripped = _TRAILING_DIGITS_RE.sub("", low)
                cands = self.phrases.get(stripped) if stripped != low else None
                if cands is None:
                    continue
                cands = [c for c in cands if len(c[0]) == 1]
            for words, kind, n_chars in cands:
                if n_chars < min_chars:
                    continue
                k = 1
                while (k < len(words) and i + k < n and toks[i + k][2] == words[k]
                       and toks[i + k][0] - toks[i + k - 1][1] <= _MAX_GAP):
                    k += 1
                if k == len(words):
                    found[kind] += 1
        if self.digits:
            lengths = self.digit_lengths
            for run in _DIGIT_RUN_RE.finditer(text):
                groups = _DIGIT_GROUP_RE.findall(run.group())
                if sum(len(g) for g in groups) < 5:
                    continue
                for a in range(len(groups)):
                    acc = ""
                    for b in range(a, min(len(groups), a + 5)):
                        acc += groups[b]
                        if len(acc) in lengths and acc in self.digits and len(acc) >= min_chars:
                            found[self.digits[acc] + "_digits"] += 1
                        if len(acc) > max(lengths):
                            break
        return found

    def number_hits(self, value: int) -> Counter:
        """An integer cell equal to a digit identifier (an SSN stored as a number)."""
        s = str(abs(int(value)))
        kind = self.digits.get(s)
        return Counter({kind + "_digits": 1}) if kind else Counter()


# --------------------------------------------------------------------------------------------------
# Collecting identifiers from the landing area (PHI zone)
# --------------------------------------------------------------------------------------------------


def _read_csv_dicts(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        return list(csv.DictReader(fh))


def _comment_identifiers(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    for line in lines:
        body = line.lstrip("#").strip()
        for m in _COMMENT_KV_RE.finditer(body):
            key = re.sub(r"[\s./-]+", "_", m.group(1).strip().lower())
            kind = _COMMENT_KEYS.get(key)
            if kind and m.group(2).strip():
                yield m.group(2).strip(), kind


def _cell(value: object) -> object:
    if hasattr(value, "isoformat") and hasattr(value, "hour"):  # a parsed date: its ISO date
        try:
            if value != value:  # NaT
                return None
        except TypeError:
            pass
        return value.isoformat()[:10] if (value.hour, value.minute, value.second) == (0, 0, 0) else value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def _add_patient_rows(rows: Iterable[dict], ids: IdentifierSet) -> IdentifierSet:
    for row in rows:
        for col, kind in PATIENT_COLUMNS.items():
            v = _cell(row.get(col))
            if kind and v not in (None, ""):
                ids.add(v, kind)
        ids.add_full_name(_cell(row.get("FIRST")), _cell(row.get("LAST")))
    return ids


def identifiers_from_patients(patients, ids: IdentifierSet | None = None) -> IdentifierSet:
    """Identifiers of a patients frame (Synthea ``patients.csv`` columns, as read by the sources)."""
    ids = ids if ids is not None else IdentifierSet()
    cols = [c for c in PATIENT_COLUMNS if c in patients.columns]
    return _add_patient_rows(patients[cols].to_dict("records"), ids)


def collect_identifiers(delivery_dirs: Iterable[Path], ids: IdentifierSet | None = None) -> IdentifierSet:
    """Raw identifiers of every delivery folder given (``<landing>/<site>/<delivery>/``)."""
    ids = ids if ids is not None else IdentifierSet()
    for ddir in delivery_dirs:
        ddir = Path(ddir)
        _add_patient_rows(_read_csv_dicts(ddir / "ehr" / "patients.csv"), ids)
        dictionary = _read_csv_dicts(ddir / "interviews" / "data_dictionary.csv")
        flagged = [r.get("Variable / Field Name", "") for r in dictionary
                   if str(r.get("Identifier?", "")).strip().lower() == "y"]
        for row in _read_csv_dicts(ddir / "interviews" / "records.csv"):
            for name in flagged:
                if row.get(name):
                    kind = "phone" if "phone" in name else ("name" if "name" in name else "redcap_identifier")
                    ids.add(row[name], kind)
        wdir = ddir / "waveforms"
        for row in _read_csv_dicts(wdir / "manifest.csv"):
            ids.add(row.get("record"), "record_name")
            ids.add(row.get("device_serial"), "device_serial")
        if wdir.exists():
            for hea in sorted(wdir.glob("*.hea")):
                ids.add(hea.stem, "record_name")
                lines = hea.read_text(encoding="utf-8", errors="replace").splitlines()
                for value, kind in _comment_identifiers(x for x in lines if x.lstrip().startswith("#")):
                    ids.add(value, kind)
    return ids


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


@dataclass
class ScanReport:
    """Hit counts by (area, location, kind); ``scanned`` counts what was looked at, per area."""

    hits: Counter = field(default_factory=Counter)
    scanned: Counter = field(default_factory=Counter)

    def add(self, area: str, location: str, found: Counter) -> None:
        for kind, n in found.items():
            self.hits[(area, location, kind)] += n

    def merge(self, other: ScanReport) -> ScanReport:
        self.hits.update(other.hits)
        self.scanned.update(other.scanned)
        return self

    @property
    def total(self) -> int:
        return int(sum(self.hits.values()))

    def by_kind(self) -> dict[str, int]:
        out: Counter = Counter()
        for (_a, _l, kind), n in self.hits.items():
            out[kind] += n
        return dict(sorted(out.items()))

    def by_area(self) -> dict[str, int]:
        out: Counter = Counter()
        for (area, _l, _k), n in self.hits.items():
            out[area] += n
        return dict(sorted(out.items()))

    def locations(self, limit: int = 50) -> list[dict]:
        """[{area, location, kind, hits}], most hits first. Locations never hold identifier values."""
        rows = [{"area": a, "location": loc, "kind": k, "hits": int(n)} for (a, loc, k), n in self.hits.items()]
        return sorted(rows, key=lambda r: (-r["hits"], r["area"], r["location"], r["kind"]))[:limit]


def _redact_path(rel: Path | str, ids: IdentifierSet) -> tuple[str, Counter]:
    parts = Path(rel).parts
    found: Counter = Counter()
    out = []
    for p in parts:
        h = ids.hits(p)
        found.update(h)
        out.append(REDACTED if h else p)
    return "/".join(out), found


def _scan_name(report: ScanReport, area: str, name: str, ids: IdentifierSet) -> str:
    """Scan a table/column/key name; return it, redacted if it holds an identifier."""
    h = ids.hits(name)
    if h:
        report.add(area, f"{REDACTED} (name)", h)
        return REDACTED
    return name


# --------------------------------------------------------------------------------------------------
# Warehouse (DuckDB)
# --------------------------------------------------------------------------------------------------

_TEXT_TYPES = ("VARCHAR", "JSON", "BLOB", "STRUCT", "MAP", "UNION")
_INT_TYPES = ("BIGINT", "INTEGER", "HUGEINT", "UBIGINT", "UINTEGER", "UHUGEINT")


def scan_warehouse(database, ids: IdentifierSet) -> ScanReport:
    """Every table and view of the DuckDB warehouse (a file path, opened read-only, or an open
    connection): text-like columns token/digit-scanned (each distinct value weighted by its row
    count), integer columns compared with digit identifiers, and schema/table/column names."""
    import duckdb

    report = ScanReport()
    own = isinstance(database, str | Path)
    if own and not Path(database).exists():
        return report
    con = duckdb.connect(str(database), read_only=True) if own else database
    try:
        cols = con.execute(
            "select table_schema, table_name, column_name, data_type from information_schema.columns "
            "where table_catalog = current_database() order by 1, 2, ordinal_position"
        ).fetchall()
        tables = sorted({(s, t) for s, t, _c, _d in cols})
        report.scanned["tables"] += len(tables)
        for schema, table, column, dtype in cols:
            loc_t = f"{_scan_name(report, 'warehouse', schema, ids)}.{_scan_name(report, 'warehouse', table, ids)}"
            loc = f"{loc_t}.{_scan_name(report, 'warehouse', column, ids)}"
            q_col = '"' + column.replace('"', '""') + '"'
            q_tab = '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'
            base = dtype.upper()
            report.scanned["columns"] += 1
            if base.startswith(_TEXT_TYPES) or base.endswith("[]"):
                rows = con.execute(
                    f"select cast({q_col} as varchar) v, count(*) n from {q_tab} where {q_col} is not null group by 1"
                ).fetchall()
                found: Counter = Counter()
                for v, n in rows:
                    for kind, c in ids.hits(v).items():
                        found[kind] += c * n
                report.scanned["values"] += sum(n for _v, n in rows)
                report.add("warehouse", loc, found)
            elif base in _INT_TYPES and ids.digits:
                rows = con.execute(
                    f"select {q_col} v, count(*) n from {q_tab} where abs({q_col}) >= 10000 group by 1"
                ).fetchall()
                found = Counter()
                for v, n in rows:
                    for kind, c in ids.number_hits(v).items():
                        found[kind] += c * n
                report.scanned["values"] += sum(n for _v, n in rows)
                report.add("warehouse", loc, found)
    finally:
        if own:
            con.close()
    return report


# --------------------------------------------------------------------------------------------------
# Files (waveform store, MLflow artifacts, Dagster compute logs)
# --------------------------------------------------------------------------------------------------


def _is_text_file(path: Path) -> bool:
    return path.suffix.lower() in _TEXT_SUFFIXES


def scan_files(root: str | Path, ids: IdentifierSet, *, area: str, skip_suffixes: Iterable[str] = ()) -> ScanReport:
    """Every file under ``root``: path components, and content (text files as UTF-8; binary files as
    decoded bytes, counting only identifiers of >= ``BINARY_MIN_CHARS`` characters)."""
    report = ScanReport()
    root = Path(root)
    if not root.exists():
        return report
    skip = {s.lower() for s in skip_suffixes}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        loc, found = _redact_path(rel, ids)
        report.scanned["files"] += 1
        if path.suffix.lower() not in skip:
            data = path.read_bytes()
            report.scanned["bytes"] += len(data)
            if _is_text_file(path):
                found.update(ids.hits(data.decode("utf-8", errors="replace")))
            else:
                found.update(ids.hits(data.decode("utf-8", errors="replace"), min_chars=BINARY_MIN_CHARS))
        report.add(area, loc, found)
    return report


# --------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------


def _local_path(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


def _scan_mapping(report: ScanReport, area: str, where: str, mapping: dict, ids: IdentifierSet) -> None:
    for k, v in (mapping or {}).items():
        report.scanned["fields"] += 1
        kh = ids.hits(str(k))
        vh = ids.hits(str(v))
        key_loc = REDACTED if kh else str(k)
        report.add(area, f"{where}:{key_loc}", kh + vh)


def scan_mlflow(tracking_uri: str, ids: IdentifierSet, artifact_roots: Iterable[str | Path] = ()) -> ScanReport:
    """Experiments, runs (names, params, tags, metric keys), logged and registered models, and every
    artifact file (each run's local artifact folder and the given artifact roots)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    report = ScanReport()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    roots: set[Path] = {Path(r).resolve() for r in artifact_roots if r and Path(r).exists()}
    for exp in client.search_experiments(view_type=ViewType.ALL):
        report.scanned["experiments"] += 1
        report.add("mlflow", "experiment.name", ids.hits(exp.name))
        _scan_mapping(report, "mlflow", "experiment.tag", exp.tags, ids)
        loc = _local_path(exp.artifact_location)
        if loc is not None and loc.exists():
            roots.add(loc.resolve())
        page_token = None
        while True:
            runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                                      page_token=page_token)
            for run in runs:
                report.scanned["runs"] += 1
                report.add("mlflow", "run.name", ids.hits(run.info.run_name or ""))
                _scan_mapping(report, "mlflow", "run.param", run.data.params, ids)
                _scan_mapping(report, "mlflow", "run.tag", run.data.tags, ids)
                for key in run.data.metrics:
                    report.scanned["fields"] += 1
                    report.add("mlflow", "run.metric_key", ids.hits(key))
                for ds in getattr(run.inputs, "dataset_inputs", None) or []:
                    d = ds.dataset
                    report.add("mlflow", "run.dataset", ids.hits(" ".join(
                        str(x) for x in (d.name, d.source, d.source_type, d.schema, d.profile) if x)))
                loc = _local_path(run.info.artifact_uri)
                if loc is not None and loc.exists():
                    roots.add(loc.resolve())
            page_token = runs.token
            if not page_token:
                break
        try:
            models = client.search_logged_models(experiment_ids=[exp.experiment_id])
        except Exception:  # noqa: BLE001 - stores without logged-model support
            models = []
        for m in models:
            report.scanned["logged_models"] += 1
            report.add("mlflow", "logged_model.name", ids.hits(m.name or ""))
            _scan_mapping(report, "mlflow", "logged_model.param", m.params, ids)
            _scan_mapping(report, "mlflow", "logged_model.tag", m.tags, ids)
            loc = _local_path(m.artifact_location)
            if loc is not None and loc.exists():
                roots.add(loc.resolve())
    for rm in client.search_registered_models():
        report.scanned["registered_models"] += 1
        report.add("mlflow", "registered_model", ids.hits(" ".join([rm.name, rm.description or ""])))
        _scan_mapping(report, "mlflow", "registered_model.tag", rm.tags, ids)
        for mv in client.search_model_versions(f"name = '{rm.name}'"):
            report.add("mlflow", "model_version", ids.hits(" ".join([mv.description or "", mv.source or ""])))
            _scan_mapping(report, "mlflow", "model_version.tag", mv.tags, ids)
    # nested roots (a run folder inside the artifact root) are scanned once, from the outermost
    outer = [r for r in sorted(roots) if not any(r != o and r.is_relative_to(o) for o in roots)]
    for r in outer:
        sub = scan_files(r, ids, area="mlflow_artifacts")
        report.merge(sub)
    return report


# --------------------------------------------------------------------------------------------------
# Dagster event log
# --------------------------------------------------------------------------------------------------


def _leaves(obj, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key path, scalar as text) for every leaf of a JSON-like object; keys are leaves too."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + ".<key>", str(k)
            yield from _leaves(v, f"{path}.{k}" if not str(k).startswith("__") else path)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _leaves(v, path)
    elif obj is not None and not isinstance(obj, bool | float):
        yield path, str(obj)


def scan_dagster(instance, ids: IdentifierSet, *, serialize=None) -> ScanReport:
    """Every run's config and tags and every event of every run (messages, asset and check metadata),
    walked leaf by leaf after Dagster serialization. ``serialize`` defaults to ``dagster.serialize_value``
    (passed in so this module does not import Dagster)."""
    report = ScanReport()
    if serialize is None:
        raise ValueError("scan_dagster needs the serializer (dagster.serialize_value)")
    for run in instance.get_runs():
        report.scanned["runs"] += 1
        for _p, text in _leaves({"config": run.run_config, "tags": dict(run.tags or {})}):
            report.add("dagster", "run.config_and_tags", ids.hits(text))
        for entry in instance.all_logs(run.run_id):
            report.scanned["events"] += 1
            kind = entry.dagster_event.event_type_value if entry.dagster_event is not None else "LOG_MESSAGE"
            payload = json.loads(serialize(entry))
            found: Counter = Counter()
            for _p, text in _leaves(payload):
                found.update(ids.hits(text))
            report.add("dagster", f"event_log:{kind}", found)
    return report
