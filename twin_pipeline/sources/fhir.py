"""Reader for FHIR R4 EHR input in a delivery's `ehr/` folder: Bundles (`*.json`, type transaction,
batch, collection or searchset, or a single resource) and bulk-data NDJSON (`*.ndjson`, one resource
per line).

Patient, Encounter, Condition, Observation, MedicationRequest and Procedure resources become the same
raw frames `sources.synthea_csv` returns for the Synthea CSV tables (same column names, datetimes
parsed to naive UTC, every other value a string), so de-identification and harmonization do not know
which format a site sent. Other resource types are counted and skipped. A file that is not valid JSON
is quarantined whole; a resource without its subject, code or date is quarantined with a reason.
Frames hold PHI and never leave memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from twin_pipeline.sources.landing import Quarantine, SiteConfig

FHIR_TABLES = {  # resource type -> Synthea CSV table
    "Patient": "patients",
    "Encounter": "encounters",
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationRequest": "medications",
    "Procedure": "procedures",
}
FHIR_SUFFIXES = (".json", ".ndjson")
UCUM = "http://unitsofmeasure.org"
# FHIR Encounter.class (v3 ActCode) -> Synthea ENCOUNTERCLASS spelling
ENCOUNTER_CLASS = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient", "ACUTE": "inpatient",
                   "NONAC": "inpatient", "OBSENC": "outpatient", "SS": "outpatient", "HH": "home",
                   "VR": "virtual", "PRENC": "ambulatory"}
ETHNICITY = {"2135-2": "hispanic", "2186-5": "nonhispanic"}


def fhir_files(ehr_dir: Path) -> list[Path]:
    """FHIR files of a delivery's `ehr/` folder, sorted by name."""
    ehr_dir = Path(ehr_dir)
    if not ehr_dir.exists():
        return []
    return sorted(p for p in ehr_dir.iterdir() if p.is_file() and p.suffix.lower() in FHIR_SUFFIXES)


def iter_resources(path: Path) -> Iterator[tuple[int, dict]]:
    """(position, resource): the entry number in a Bundle (1-based) or the line number in NDJSON.

    Raises ValueError naming the file (never its content) when it is not valid JSON."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".ndjson":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line, parse_float=str, parse_int=str)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {line_no} is not JSON ({exc.msg})") from None
        return
    try:
        doc = json.loads(text, parse_float=str, parse_int=str)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise ValueError("top-level JSON value is not a FHIR resource")
    if doc.get("resourceType") == "Bundle":
        for i, entry in enumerate(doc.get("entry") or [], start=1):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield i, entry["resource"]
    else:
        yield 1, doc


def _ref_id(ref: dict | None) -> str | None:
    """`urn:uuid:<id>`, `Patient/<id>` or `<id>` -> `<id>`."""
    if not isinstance(ref, dict) or not ref.get("reference"):
        return None
    r = str(ref["reference"])
    if r.startswith("urn:uuid:"):
        return r.removeprefix("urn:uuid:")
    return r.rsplit("/", 1)[-1]


def _coding(concept: dict | None) -> dict:
    codings = (concept or {}).get("coding") or []
    return codings[0] if codings else {}


def _utc(value: str | None) -> pd.Timestamp | None:
    """FHIR dateTime/instant/date -> naive UTC timestamp (a date stays midnight)."""
    if not value:
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def _local_date(value: str | None) -> pd.Timestamp | None:
    """The calendar date as written (local to the sender's offset), as Synthea's CSV writes condition
    START/STOP: an onset at 19:36-07:00 is that day, not the next UTC day."""
    if not value:
        return None
    return pd.Timestamp(str(value)[:10])


def _period(res: dict, *names: str) -> tuple[str | None, str | None]:
    for name in names:
        val = res.get(name)
        if isinstance(val, dict):
            return val.get("start"), val.get("end")
        if isinstance(val, str):
            return val, None
    return None, None


def _identifier(res: dict, type_code: str) -> str | None:
    for ident in res.get("identifier") or []:
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or []}
        if type_code in codes:
            return ident.get("value")
    return None


def _ext(res: dict, suffix: str) -> list[dict]:
    return [e for e in res.get("extension") or [] if str(e.get("url", "")).endswith(suffix)]


def _patient(res: dict) -> dict:
    name = next(iter(res.get("name") or []), {})
    addr = next(iter(res.get("address") or []), {})
    race = ""
    for ext in _ext(res, "us-core-race"):
        for sub in ext.get("extension") or []:
            if sub.get("url") == "text":
                race = str(sub.get("valueString", "")).lower()
    eth = ""
    for ext in _ext(res, "us-core-ethnicity"):
        for sub in ext.get("extension") or []:
            if sub.get("url") == "ombCategory":
                eth = ETHNICITY.get((sub.get("valueCoding") or {}).get("code"), "")
    birthplace = next((e.get("valueAddress") or {} for e in _ext(res, "patient-birthPlace")), {})
    maiden = next((e.get("valueString") for e in _ext(res, "patient-mothersMaidenName")), None)
    phone = next((t.get("value") for t in res.get("telecom") or [] if t.get("system") == "phone"), None)
    gender = {"male": "M", "female": "F"}.get(str(res.get("gender", "")).lower())
    return {
        "Id": res.get("id"),
        "BIRTHDATE": _utc(res.get("birthDate")),
        "DEATHDATE": _utc(res.get("deceasedDateTime")),
        "SSN": _identifier(res, "SS"), "DRIVERS": _identifier(res, "DL"), "PASSPORT": _identifier(res, "PPN"),
        "MRN": _identifier(res, "MR"),
        "PREFIX": " ".join(name.get("prefix") or []) or None,
        "FIRST": " ".join(name.get("given") or []) or None,
        "LAST": name.get("family"),
        "SUFFIX": " ".join(name.get("suffix") or []) or None,
        "MAIDEN": maiden,
        "MARITAL": _coding(res.get("maritalStatus")).get("code"),
        "RACE": race or None, "ETHNICITY": eth or None, "GENDER": gender,
        "BIRTHPLACE": " ".join(str(birthplace[k]) for k in ("city", "state", "country") if birthplace.get(k)) or None,
        "ADDRESS": " ".join(addr.get("line") or []) or None,
        "CITY": addr.get("city"), "STATE": addr.get("state"), "COUNTY": None, "ZIP": addr.get("postalCode"),
        "PHONE": phone,
    }


def _encounter(res: dict) -> dict:
    start, stop = _period(res, "period")
    code = _coding(next(iter(res.get("type") or []), None))
    cls = (res.get("class") or {}).get("code")
    reason = _coding(next(iter(res.get("reasonCode") or []), None))
    return {
        "Id": res.get("id"), "START": _utc(start), "STOP": _utc(stop), "PATIENT": _ref_id(res.get("subject")),
        "ORGANIZATION": None, "PROVIDER": None, "PAYER": None,
        "ENCOUNTERCLASS": ENCOUNTER_CLASS.get(str(cls).upper(), str(cls).lower()) if cls else None,
        "CODE": code.get("code"), "DESCRIPTION": code.get("display"),
        "REASONCODE": reason.get("code"), "REASONDESCRIPTION": reason.get("display"),
    }


def _condition(res: dict) -> dict:
    code = _coding(res.get("code"))
    return {
        "START": _local_date(res.get("onsetDateTime") or (res.get("onsetPeriod") or {}).get("start")
                           or res.get("recordedDate")),
        "STOP": _local_date(res.get("abatementDateTime") or (res.get("abatementPeriod") or {}).get("end")),
        "PATIENT": _ref_id(res.get("subject")), "ENCOUNTER": _ref_id(res.get("encounter")),
        "CODE": code.get("code"), "DESCRIPTION": code.get("display"),
    }


def _value(holder: dict) -> tuple[str | None, str | None, str]:
    """(VALUE, UNITS, TYPE) as Synthea's CSV writes them."""
    q = holder.get("valueQuantity")
    if isinstance(q, dict):
        unit = q.get("code") if q.get("system") == UCUM and q.get("code") else q.get("unit")
        return (None if q.get("value") is None else str(q["value"])), unit, "numeric"
    if isinstance(holder.get("valueCodeableConcept"), dict):
        c = holder["valueCodeableConcept"]
        return _coding(c).get("display") or c.get("text"), None, "text"
    for key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime"):
        if key in holder:
            return str(holder[key]), None, "numeric" if key == "valueInteger" else "text"
    return None, None, "text"


def _observations(res: dict) -> list[dict]:
    """One row per valued Observation, plus one per valued component (blood-pressure panels)."""
    category = _coding(next(iter(res.get("category") or []), None)).get("code")
    base = {"DATE": _utc(res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start")
                         or res.get("issued")),
            "PATIENT": _ref_id(res.get("subject")), "ENCOUNTER": _ref_id(res.get("encounter")),
            "CATEGORY": category}
    rows = []
    holders = [res] if any(k.startswith("value") for k in res) else []
    holders += [c for c in res.get("component") or [] if any(k.startswith("value") for k in c)]
    for h in holders:
        code = _coding(h.get("code"))
        value, unit, kind = _value(h)
        rows.append({**base, "CODE": code.get("code"), "DESCRIPTION": code.get("display"),
                     "VALUE": value, "UNITS": unit, "TYPE": kind})
    return rows


def _medication(res: dict) -> dict:
    code = _coding(res.get("medicationCodeableConcept"))
    validity = (res.get("dispenseRequest") or {}).get("validityPeriod") or {}
    reason = _coding(next(iter(res.get("reasonCode") or []), None))
    repeats = (res.get("dispenseRequest") or {}).get("numberOfRepeatsAllowed")
    return {
        "START": _utc(res.get("authoredOn") or validity.get("start")), "STOP": _utc(validity.get("end")),
        "PATIENT": _ref_id(res.get("subject")), "PAYER": None, "ENCOUNTER": _ref_id(res.get("encounter")),
        "CODE": code.get("code"), "DESCRIPTION": code.get("display"),
        "DISPENSES": None if repeats is None else str(int(repeats) + 1),
        "REASONCODE": reason.get("code"), "REASONDESCRIPTION": reason.get("display"),
    }


def _procedure(res: dict) -> dict:
    code = _coding(res.get("code"))
    start, stop = _period(res, "performedPeriod", "performedDateTime")
    reason = _coding(next(iter(res.get("reasonCode") or []), None))
    return {
        "START": _utc(start), "STOP": _utc(stop), "PATIENT": _ref_id(res.get("subject")),
        "ENCOUNTER": _ref_id(res.get("encounter")), "CODE": code.get("code"), "DESCRIPTION": code.get("display"),
        "REASONCODE": reason.get("code"), "REASONDESCRIPTION": reason.get("display"),
    }


_CONVERT = {"Patient": _patient, "Encounter": _encounter, "Condition": _condition,
            "MedicationRequest": _medication, "Procedure": _procedure}


def read_fhir_tables(
    ehr_dir: Path, site: SiteConfig, delivery_id: str, quarantine: Quarantine, *, not_null: dict[str, list[str]],
    dates: dict[str, list[str]], columns: dict[str, list[str]],
) -> dict[str, tuple[pd.DataFrame, int, int]]:
    """{table: (frame, received, loaded)} from every FHIR file of `ehr_dir`.

    `not_null`, `dates`, `columns` come from the CSV reader's table spec, so both formats apply the
    same contract: a row missing a required value is quarantined with the same kind of reason."""
    rows: dict[str, list[dict]] = {t: [] for t in FHIR_TABLES.values()}
    received = {t: 0 for t in FHIR_TABLES.values()}
    for path in fhir_files(ehr_dir):
        try:
            resources = list(iter_resources(path))
        except (ValueError, UnicodeDecodeError) as exc:
            quarantine.reject_file("ehr_fhir", path, f"unreadable FHIR file: {site.site_id}/{delivery_id}/{path.name}: {exc}")
            continue
        for pos, res in resources:
            rtype = res.get("resourceType")
            if rtype not in FHIR_TABLES:
                continue
            table = FHIR_TABLES[rtype]
            converted = _observations(res) if rtype == "Observation" else [_CONVERT[rtype](res)]
            if rtype == "Observation" and not converted:  # a panel without values: nothing to load
                continue
            for rec in converted:
                received[table] += 1
                rec["_source_file"] = path.name
                rec["_source_row"] = pos
                rows[table].append(rec)
    out = {}
    for table, recs in rows.items():
        cols = list(dict.fromkeys([*columns[table], *(k for r in recs for k in r)]))
        df = pd.DataFrame(recs, columns=cols)
        for col in dates[table]:
            df[col] = pd.to_datetime(df[col]).astype("datetime64[ns]")
        for col in df.columns:
            if col not in dates[table] and col != "_source_row":
                df[col] = df[col].astype(object).where(df[col].notna(), None)
        df["_source_row"] = df["_source_row"].astype("int64") if len(df) else pd.Series(dtype="int64")
        for col in not_null[table]:
            bad = df[col].isna()
            if bad.any():
                quarantine.reject_rows(
                    f"ehr_{table}", df[bad].astype(object),
                    f"missing value: {site.site_id}/{delivery_id}/FHIR {table} element for {col}")
                df = df[~bad]
        out[table] = (df.reset_index(drop=True), received[table], len(df))
    return out
