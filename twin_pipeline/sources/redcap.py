"""Reader for REDCap records exports + data dictionaries (`interviews/` of a delivery).

The data dictionary drives validation: field types, slider / integer bounds, radio and yes/no choices,
and which fields are identifiers (`Identifier? = y`). A row with a value outside its field's declared
domain goes to quarantine with the field name in the reason (never the value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.csv_reader import date_formats, parse_datetimes, read_csv_rows
from twin_pipeline.sources.landing import Quarantine, SiteConfig

DICTIONARY_COLUMNS = [
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
]
REQUIRED_RECORD_FIELDS = ["record_id", "patient_id", "interview_date"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    field_type: str  # text, notes, radio, dropdown, yesno, slider, calc, ...
    label: str
    validation: str  # integer, number, date_ymd, ...
    vmin: float | None
    vmax: float | None
    choices: dict[str, str]
    identifier: bool

    @property
    def numeric(self) -> bool:
        return self.field_type in {"slider", "yesno", "radio", "dropdown", "truefalse"} or self.validation in {
            "integer",
            "number",
        }


@dataclass
class InterviewLoad:
    frame: pd.DataFrame  # raw (PHI) records with typed answers
    fields: dict[str, FieldSpec]
    received: int
    loaded: int
    quarantined: int
    file_present: bool


def _parse_choices(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for part in str(text).split("|"):
        if "," in part:
            code, label = part.split(",", 1)
            out[code.strip()] = label.strip()
    return out


def _num(x) -> float | None:
    try:
        return float(x) if x not in (None, "") else None
    except ValueError:
        return None


def read_data_dictionary(path: Path, quarantine: Quarantine, site_id: str, delivery_id: str) -> dict[str, FieldSpec]:
    res = read_csv_rows(
        path,
        source="interviews_dictionary",
        required=DICTIONARY_COLUMNS[:6],
        quarantine=quarantine,
        site_id=site_id,
        delivery_id=delivery_id,
    )
    specs: dict[str, FieldSpec] = {}
    for row in res.frame.to_dict("records"):
        name = (row.get("Variable / Field Name") or "").strip()
        if not name:
            continue
        ftype = (row.get("Field Type") or "text").strip()
        choices = _parse_choices(row.get("Choices, Calculations, OR Slider Labels"))
        validation = (row.get("Text Validation Type OR Show Slider Number") or "").strip()
        vmin, vmax = _num(row.get("Text Validation Min")), _num(row.get("Text Validation Max"))
        if ftype == "yesno":
            choices = {"0": "No", "1": "Yes"}
        if ftype == "slider":
            vmin = 0.0 if vmin is None else vmin
            vmax = 100.0 if vmax is None else vmax
        specs[name] = FieldSpec(
            name=name,
            field_type=ftype,
            label=(row.get("Field Label") or "").strip(),
            validation=validation,
            vmin=vmin,
            vmax=vmax,
            choices=choices,
            identifier=str(row.get("Identifier?") or "").strip().lower() == "y",
        )
    return specs


def read_interviews(delivery_dir: Path, site: SiteConfig, delivery_id: str, quarantine: Quarantine) -> InterviewLoad:
    idir = Path(delivery_dir) / "interviews"
    fields = read_data_dictionary(idir / "data_dictionary.csv", quarantine, site.site_id, delivery_id)
    res = read_csv_rows(
        idir / "records.csv",
        source="interviews_records",
        required=REQUIRED_RECORD_FIELDS,
        quarantine=quarantine,
        site_id=site.site_id,
        delivery_id=delivery_id,
    )
    df = res.frame
    src = "interviews_records"
    fname = f"{site.site_id}/{delivery_id}/interviews/records.csv"
    if res.file_present and not fields and res.received:
        quarantine.reject_rows(src, df, f"no data dictionary: {fname} cannot be validated")
        df = df.iloc[0:0]
    for col in ("record_id", "patient_id", "interview_date"):
        bad = df[col].isna()
        if bad.any():
            quarantine.reject_rows(src, df[bad], f"missing value: {fname} field {col}")
            df = df[~bad]
    parsed = parse_datetimes(df["interview_date"], date_formats(site.date_format, site.datetime_format))
    bad = parsed.isna()
    if bad.any():
        quarantine.reject_rows(src, df[bad], f"unparseable date: {fname} field interview_date")
    df = df[~bad].copy()
    df["interview_date"] = parsed[~bad]
    for name, spec in fields.items():
        if name not in df.columns or not spec.numeric or name in REQUIRED_RECORD_FIELDS:
            continue
        raw = df[name]
        values = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & values.isna()
        if spec.choices and spec.field_type in {"radio", "dropdown", "yesno"}:
            allowed = {float(c) for c in spec.choices if re.fullmatch(r"-?\d+(\.\d+)?", c)}
            bad |= values.notna() & ~values.isin(list(allowed))
        if spec.vmin is not None:
            bad |= values < spec.vmin
        if spec.vmax is not None:
            bad |= values > spec.vmax
        if bad.any():
            quarantine.reject_rows(src, df[bad], f"value outside declared domain: {fname} field {name}")
        df = df[~bad].copy()
        df[name] = values[~bad].astype("float64")
    loaded = len(df)
    return InterviewLoad(df.reset_index(drop=True), fields, res.received, loaded, res.received - loaded, res.file_present)
