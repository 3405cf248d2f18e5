"""De-identify whole landing tables: the privacy boundary between raw deliveries and the warehouse.

Built from the primitives in `lib.deid` (keyed pseudonyms, one date shift per patient, Safe Harbor
generalisations, free-text scrubbing). Every output frame has only pseudonymous ids, shifted dates,
generalised quasi-identifiers and lineage columns (`site_id`, `delivery_id`, `source_file`,
`source_row`). Raw frames go in; nothing raw comes out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from twin_pipeline.lib import deid

LINEAGE = ["site_id", "delivery_id", "source_file", "source_row"]

# identifier-bearing columns of Synthea's patients.csv whose values feed the free-text scrubber
PATIENT_IDENTIFIER_COLUMNS = [
    "FIRST", "LAST", "MAIDEN", "PREFIX", "SUFFIX", "SSN", "DRIVERS", "PASSPORT", "ADDRESS", "CITY",
    "MRN", "PHONE", "BIRTHPLACE", "COUNTY", "ZIP", "BIRTHDATE",
]
# de-identified columns that hold delivered text (code descriptions, text-valued observations such as
# Synthea's SDOH answers "What address do you live at?"): scrubbed, never copied raw
TEXT_COLUMNS = {
    "visit": ["description"],
    "condition": ["description"],
    "observation": ["description", "value_source"],
    "medication": ["description"],
    "procedure": ["description"],
}


def _lineage(df: pd.DataFrame, site_id: str, delivery_id: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "site_id": site_id,
            "delivery_id": delivery_id,
            "source_file": df["_source_file"].astype(str).values if "_source_file" in df else "",
            "source_row": df["_source_row"].astype("int64").values if "_source_row" in df else -1,
        },
        index=df.index,
    )


def patient_shifts(key: deid.DeidKey, site_id: str, local_ids: pd.Series) -> pd.Series:
    """Per-row date shift (days) from each row's local patient id (computed once per patient)."""
    uniq = pd.unique(local_ids.dropna().astype(str))
    table = {pid: deid.date_shift_days(key, site_id, pid) for pid in uniq}
    return local_ids.astype(str).map(table).astype("int64")


def _shift(values: pd.Series, shifts: pd.Series) -> pd.Series:
    return deid.shift_dates(pd.to_datetime(values), shifts)


def deidentify_patients(
    patients: pd.DataFrame,
    *,
    key: deid.DeidKey,
    site_id: str,
    delivery_id: str,
    restricted_zip3: set[str],
) -> pd.DataFrame:
    """One row per patient of the delivery: pseudonym, generalised demographics, shifted dates."""
    reference = pd.Timestamp(dt.date.fromisoformat(delivery_id))
    shifts = patient_shifts(key, site_id, patients["Id"])
    birth = pd.to_datetime(patients["BIRTHDATE"])
    death = pd.to_datetime(patients["DEATHDATE"])
    age_at = death.where(death.notna() & (death < reference), reference)
    age = deid.age_years(birth, age_at)
    over_89 = age > 89
    out = pd.DataFrame(
        {
            "person_id": deid.pseudonymize_series(key, site_id, patients["Id"], "person").values,
            "gender": patients["GENDER"].fillna("U").str.upper().str[:1].values,
            "race": patients["RACE"].fillna("unknown").str.lower().values,
            "ethnicity": patients["ETHNICITY"].fillna("unknown").str.lower().values,
            "year_of_birth": deid.safe_birth_year(birth, age_at).values,
            "age_years": deid.safe_age(age).values,
            "age_band": deid.age_band(age).values,
            "birth_date": _shift(birth, shifts).where(~over_89).values,
            "death_date": _shift(death, shifts).values,
            "zip3": deid.zip3(patients["ZIP"], restricted_zip3).values,
            "state": (patients["STATE"] if "STATE" in patients else pd.Series(None, index=patients.index)).values,
        },
        index=patients.index,
    )
    out = pd.concat([out, _lineage(patients, site_id, delivery_id)], axis=1)
    out["birth_date"] = pd.to_datetime(out["birth_date"])
    out["death_date"] = pd.to_datetime(out["death_date"])
    # a patient repeated inside one delivery keeps its last row (incremental extracts re-send rows)
    return out.drop_duplicates("person_id", keep="last").reset_index(drop=True)


def _event_table(
    df: pd.DataFrame,
    *,
    key: deid.DeidKey,
    site_id: str,
    delivery_id: str,
    date_cols: dict[str, str],
    keep: dict[str, str],
    id_col: str | None = None,
    id_kind: str = "encounter",
    patient_col: str = "PATIENT",
    encounter_col: str | None = "ENCOUNTER",
) -> pd.DataFrame:
    shifts = patient_shifts(key, site_id, df[patient_col]) if len(df) else pd.Series(dtype="int64")
    cols: dict[str, object] = {}
    if id_col:
        cols["visit_id"] = deid.pseudonymize_series(key, site_id, df[id_col], id_kind).values
    cols["person_id"] = deid.pseudonymize_series(key, site_id, df[patient_col], "person").values
    if encounter_col and encounter_col in df:
        cols["visit_id"] = deid.pseudonymize_series(key, site_id, df[encounter_col], "encounter").values
    for src, dst in date_cols.items():
        cols[dst] = _shift(df[src], shifts).values if len(df) else pd.Series(dtype="datetime64[ns]").values
    for src, dst in keep.items():
        cols[dst] = df[src].values if src in df else None
    out = pd.DataFrame(cols, index=df.index)
    for dst in date_cols.values():
        out[dst] = pd.to_datetime(out[dst])
    return pd.concat([out, _lineage(df, site_id, delivery_id)], axis=1).reset_index(drop=True)


def deidentify_ehr(
    tables: dict[str, pd.DataFrame],
    *,
    key: deid.DeidKey,
    site_id: str,
    delivery_id: str,
    restricted_zip3: set[str],
) -> dict[str, pd.DataFrame]:
    """De-identify the six Synthea tables of one delivery (raw frames as read by `sources.synthea_csv`)."""
    kw = dict(key=key, site_id=site_id, delivery_id=delivery_id)
    out = {
        "person": deidentify_patients(tables["patients"], restricted_zip3=restricted_zip3, **kw),
        "visit": _event_table(
            tables["encounters"],
            date_cols={"START": "visit_start", "STOP": "visit_end"},
            keep={"ENCOUNTERCLASS": "encounter_class", "CODE": "visit_source_code", "DESCRIPTION": "description",
                  "REASONCODE": "reason_code"},
            id_col="Id",
            encounter_col=None,
            **kw,
        ),
        "condition": _event_table(
            tables["conditions"],
            date_cols={"START": "condition_start", "STOP": "condition_end"},
            keep={"CODE": "source_code", "DESCRIPTION": "description"},
            **kw,
        ),
        "observation": _event_table(
            tables["observations"],
            date_cols={"DATE": "observation_datetime"},
            keep={"CATEGORY": "category", "CODE": "source_code", "DESCRIPTION": "description",
                  "VALUE": "value_source", "UNITS": "unit_source", "TYPE": "value_type"},
            **kw,
        ),
        "medication": _event_table(
            tables["medications"],
            date_cols={"START": "drug_start", "STOP": "drug_end"},
            keep={"CODE": "source_code", "DESCRIPTION": "description", "DISPENSES": "dispenses",
                  "REASONCODE": "reason_code"},
            **kw,
        ),
        "procedure": _event_table(
            tables["procedures"],
            date_cols={"START": "procedure_start", "STOP": "procedure_end"},
            keep={"CODE": "source_code", "DESCRIPTION": "description", "REASONCODE": "reason_code"},
            **kw,
        ),
    }
    scrub_text_columns(out, tables["patients"])
    for name in ("visit", "condition", "observation", "medication", "procedure"):
        frame = out[name]
        for col in frame.columns:
            if frame[col].dtype == object and col not in ("person_id", "visit_id"):
                frame[col] = frame[col].astype("string")
    if "dispenses" in out["medication"]:
        out["medication"]["dispenses"] = pd.to_numeric(out["medication"]["dispenses"], errors="coerce")
    return out


def _is_number(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def scrub_text_columns(frames: dict[str, pd.DataFrame], patients: pd.DataFrame) -> dict[str, int]:
    """Scrub ``TEXT_COLUMNS`` in place; return how many distinct values changed per table.

    Each distinct text is scrubbed once by patterns and the names dictionary; a text that contains an
    identifier of any patient of the delivery (checked with the leak scanner's matcher) is scrubbed
    again with every patient's structured identifiers. Numeric observation values are left as they are.
    """
    from twin_pipeline.lib.leak_scan import identifiers_from_patients

    ids = identifiers_from_patients(patients)
    all_known = [v for vals in known_identifiers(patients).values() for v in vals]
    generic = deid.Scrubber()
    with_known: deid.Scrubber | None = None
    changed: dict[str, int] = {}
    for table, cols in TEXT_COLUMNS.items():
        frame = frames.get(table)
        if frame is None or not len(frame):
            continue
        n = 0
        for col in cols:
            if col not in frame:
                continue
            values = frame[col]
            distinct = pd.unique(values.dropna().astype(str))
            mapping: dict[str, str] = {}
            for v in distinct:
                if col == "value_source" and _is_number(v):
                    continue
                new = generic(v)
                if ids.hits(v):
                    if with_known is None:
                        with_known = deid.Scrubber(all_known)
                    new = with_known(new)
                if new != v:
                    mapping[v] = new
            if mapping:
                present = values.notna()
                frame.loc[present, col] = values[present].astype(str).map(lambda x: mapping.get(x, x))
                n += len(mapping)
        changed[table] = n
    return changed


def write_crosswalk(
    site_dir: Path, delivery_id: str, rows: dict[str, pd.Series], *, key: deid.DeidKey, site_id: str,
    suffix: str = "",
) -> Path:
    """Re-identification crosswalk (pseudonym → local id) for the site's own use, written ONLY under
    the site's landing folder: ``<landing>/<site>/_crosswalk/<delivery><suffix>.csv`` (PHI zone).

    ``rows`` maps a pseudonym kind ("person", "encounter", "record", "device", "interview") to the
    local ids of that kind. Columns: kind, pseudonym, local_id. Rewritten whole on every run.
    """
    parts = []
    for kind, local in rows.items():
        local = pd.Series(pd.unique(local.dropna().astype(str)))
        local = local[local.str.strip() != ""]
        if not len(local):
            continue
        parts.append(pd.DataFrame({"kind": kind, "pseudonym": deid.pseudonymize_series(key, site_id, local, kind).values,
                                   "local_id": local.values}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["kind", "pseudonym", "local_id"])
    out_dir = Path(site_dir) / "_crosswalk"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{delivery_id}{suffix}.csv"
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(path)
    return path


def read_crosswalks(site_dir: Path) -> pd.DataFrame:
    """Every crosswalk file of a site (at the site, for re-identification): kind, pseudonym, local_id."""
    files = sorted((Path(site_dir) / "_crosswalk").glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=["kind", "pseudonym", "local_id"])
    return pd.concat([pd.read_csv(f, dtype=str) for f in files], ignore_index=True).drop_duplicates()


def known_identifiers(patients: pd.DataFrame) -> dict[str, list[str]]:
    """Raw identifier strings per local patient id, for scrubbing that patient's free text (in memory only)."""
    known: dict[str, list[str]] = {}
    cols = [c for c in PATIENT_IDENTIFIER_COLUMNS if c in patients.columns]
    for rec in patients[["Id", *cols]].to_dict("records"):
        vals = [str(rec[c]) for c in cols if rec.get(c) not in (None, "") and not pd.isna(rec.get(c))]
        known.setdefault(str(rec["Id"]), []).extend(vals + [str(rec["Id"])])
    return known


def deidentify_interviews(
    records: pd.DataFrame,
    fields: dict,
    *,
    key: deid.DeidKey,
    site_id: str,
    delivery_id: str,
    known: dict[str, list[str]],
) -> pd.DataFrame:
    """REDCap records → one row per interview with pseudonyms, a shifted date, coded answers and a scrubbed note.

    Fields flagged as identifiers in the data dictionary are dropped; free-text fields other than
    `notes` are dropped; `notes` is scrubbed with the patient's own identifiers plus patterns.
    """
    shifts = patient_shifts(key, site_id, records["patient_id"]) if len(records) else pd.Series(dtype="int64")
    out = pd.DataFrame(
        {
            "interview_id": deid.pseudonymize_series(key, site_id, records["record_id"], "interview").values,
            "person_id": deid.pseudonymize_series(key, site_id, records["patient_id"], "person").values,
            "interview_date": _shift(records["interview_date"], shifts).values
            if len(records)
            else pd.Series(dtype="datetime64[ns]").values,
        },
        index=records.index,
    )
    out["interview_date"] = pd.to_datetime(out["interview_date"])
    for name, spec in fields.items():
        if name in ("record_id", "patient_id", "interview_date") or spec.identifier or name not in records:
            continue
        if spec.numeric:
            out[name] = pd.to_numeric(records[name], errors="coerce").astype("float64")
    notes_spec = fields.get("notes")
    if "notes" in records and not (notes_spec is not None and notes_spec.identifier):
        per_row_known = []
        for _, rec in records.iterrows():
            ids = list(known.get(str(rec["patient_id"]), []))
            for name, spec in fields.items():
                if spec.identifier and name in records and rec.get(name) is not None and not pd.isna(rec.get(name)):
                    ids.append(str(rec[name]))
            per_row_known.append(ids)
        out["notes"] = deid.scrub_series(records["notes"], pd.Series(per_row_known, index=records.index)).astype(
            "string"
        )
    return pd.concat([out, _lineage(records, site_id, delivery_id)], axis=1).reset_index(drop=True)


def record_pseudonyms(key: deid.DeidKey, site_id: str, records: Iterable[str]) -> dict[str, str]:
    return {r: deid.pseudonym(key, site_id, r, "record") for r in records}


def waveform_index(
    manifest: pd.DataFrame, *, key: deid.DeidKey, site_id: str, delivery_id: str, store_dir: Path
) -> pd.DataFrame:
    """De-identified waveform index: one row per record with pseudonyms and a shifted start time."""
    shifts = patient_shifts(key, site_id, manifest["patient_id"]) if len(manifest) else pd.Series(dtype="int64")
    record_ids = deid.pseudonymize_series(key, site_id, manifest["record"], "record")
    serial = manifest["device_serial"] if "device_serial" in manifest else pd.Series(None, index=manifest.index)
    out = pd.DataFrame(
        {
            "record_id": record_ids.values,
            "person_id": deid.pseudonymize_series(key, site_id, manifest["patient_id"], "person").values,
            "device_kind": manifest["device_kind"].astype(str).values,
            "device_id": deid.pseudonymize_series(key, site_id, serial, "device").values,
            "start_time": _shift(manifest["start_time"], shifts).values
            if len(manifest)
            else pd.Series(dtype="datetime64[ns]").values,
            "duration_s": manifest["duration_s"].astype("float64").values,
            "sampling_rate_hz": manifest["sampling_rate_hz"].astype("float64").values,
            "deid_path": [str(Path(store_dir) / r) for r in record_ids],
        },
        index=manifest.index,
    )
    out["start_time"] = pd.to_datetime(out["start_time"])
    return pd.concat([out, _lineage(manifest, site_id, delivery_id)], axis=1).reset_index(drop=True)


def shift_for(key: deid.DeidKey, site_id: str, local_patient_id: str) -> int:
    return deid.date_shift_days(key, site_id, local_patient_id)


__all__ = [
    "TEXT_COLUMNS",
    "deidentify_ehr",
    "deidentify_interviews",
    "deidentify_patients",
    "known_identifiers",
    "patient_shifts",
    "read_crosswalks",
    "record_pseudonyms",
    "scrub_text_columns",
    "shift_for",
    "waveform_index",
    "write_crosswalk",
]
