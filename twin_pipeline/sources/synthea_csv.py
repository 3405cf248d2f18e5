"""Reader for Synthea-style EHR CSV tables in a delivery's `ehr/` folder.

Returns raw (PHI-bearing) frames that never leave memory: callers de-identify them before writing.
Dates are parsed with the site's declared formats; rows that cannot be parsed or that name no patient
go to quarantine with a reason, so `received = loaded + quarantined` per table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from twin_pipeline.sources.csv_reader import date_formats, parse_datetimes, read_csv_rows
from twin_pipeline.sources.landing import Quarantine, SiteConfig

# table -> (required columns, date-like columns that must parse when present, columns that must be present)
EHR_TABLES: dict[str, dict] = {
    "patients": {
        "required": ["Id", "BIRTHDATE", "DEATHDATE", "GENDER", "RACE", "ETHNICITY", "ZIP"],
        "dates": ["BIRTHDATE", "DEATHDATE"],
        "not_null": ["Id", "BIRTHDATE"],
    },
    "encounters": {
        "required": ["Id", "START", "STOP", "PATIENT", "ENCOUNTERCLASS", "CODE", "DESCRIPTION"],
        "dates": ["START", "STOP"],
        "not_null": ["Id", "START", "PATIENT"],
    },
    "conditions": {
        "required": ["START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION"],
        "dates": ["START", "STOP"],
        "not_null": ["START", "PATIENT", "CODE"],
    },
    "observations": {
        "required": ["DATE", "PATIENT", "ENCOUNTER", "CATEGORY", "CODE", "DESCRIPTION", "VALUE", "UNITS", "TYPE"],
        "dates": ["DATE"],
        "not_null": ["DATE", "PATIENT", "CODE"],
    },
    "medications": {
        "required": ["START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION"],
        "dates": ["START", "STOP"],
        "not_null": ["START", "PATIENT", "CODE"],
    },
    "procedures": {
        "required": ["START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION"],
        "dates": ["START", "STOP"],
        "not_null": ["START", "PATIENT", "CODE"],
    },
}


@dataclass
class TableLoad:
    frame: pd.DataFrame
    received: int
    loaded: int
    quarantined: int
    file_present: bool


@dataclass
class EhrLoad:
    tables: dict[str, TableLoad] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            name: {"received": t.received, "loaded": t.loaded, "quarantined": t.quarantined}
            for name, t in self.tables.items()
        }


def read_ehr_table(
    path: Path, table: str, site: SiteConfig, delivery_id: str, quarantine: Quarantine
) -> TableLoad:
    spec = EHR_TABLES[table]
    source = f"ehr_{table}"
    res = read_csv_rows(
        path,
        source=source,
        required=spec["required"],
        quarantine=quarantine,
        site_id=site.site_id,
        delivery_id=delivery_id,
    )
    df = res.frame
    if not df.empty:
        for col in spec["not_null"]:
            bad = df[col].isna()
            if bad.any():
                quarantine.reject_rows(
                    source, df[bad], f"missing value: {site.site_id}/{delivery_id}/{path.name} column {col}"
                )
                df = df[~bad]
        fmts = date_formats(site.date_format, site.datetime_format)
        for col in spec["dates"]:
            parsed = parse_datetimes(df[col], fmts)
            bad = df[col].notna() & parsed.isna()
            if bad.any():
                quarantine.reject_rows(
                    source,
                    df[bad],
                    f"unparseable date: {site.site_id}/{delivery_id}/{path.name} column {col} "
                    f"(site date_format {site.date_format!r})",
                )
            df = df[~bad].copy()
            df[col] = parsed[~bad]
    else:
        for col in spec["dates"]:
            df[col] = pd.Series(dtype="datetime64[ns]")
    loaded = len(df)
    # received = good + malformed lines; everything not loaded went to quarantine (a row, or the whole file)
    return TableLoad(df.reset_index(drop=True), res.received, loaded, res.received - loaded, res.file_present)


def read_ehr(delivery_dir: Path, site: SiteConfig, delivery_id: str, quarantine: Quarantine) -> EhrLoad:
    """Read every EHR table present in `<delivery>/ehr/`: Synthea CSVs and/or FHIR R4 files.

    FHIR Bundles (`*.json`) and bulk NDJSON (`*.ndjson`) are read by `sources.fhir` into the same
    frames as the CSV tables and appended to them, so a delivery may use either format (or both, for
    different records)."""
    from twin_pipeline.sources import fhir

    out = EhrLoad()
    ehr_dir = Path(delivery_dir) / "ehr"
    for table in EHR_TABLES:
        out.tables[table] = read_ehr_table(ehr_dir / f"{table}.csv", table, site, delivery_id, quarantine)
    if not fhir.fhir_files(ehr_dir):
        return out
    loaded = fhir.read_fhir_tables(
        ehr_dir, site, delivery_id, quarantine,
        not_null={t: s["not_null"] for t, s in EHR_TABLES.items()},
        dates={t: s["dates"] for t, s in EHR_TABLES.items()},
        columns={t: s["required"] for t, s in EHR_TABLES.items()},
    )
    for table, (frame, received, n) in loaded.items():
        csv_load = out.tables[table]
        parts = [f for f in (csv_load.frame, frame) if len(f)]
        merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else (parts[0] if parts else csv_load.frame)
        out.tables[table] = TableLoad(
            merged.reset_index(drop=True), csv_load.received + received, csv_load.loaded + n,
            csv_load.quarantined + received - n, csv_load.file_present or received > 0,
        )
    return out
