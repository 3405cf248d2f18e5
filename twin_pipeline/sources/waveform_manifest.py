"""Reader for a delivery's waveform manifest (`waveforms/manifest.csv`).

The WFDB records themselves are read by `sources.wfdb_io`; this checks that each manifest row is
well-formed and that its record's header exists, quarantining the rest with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.csv_reader import parse_datetimes, read_csv_rows
from twin_pipeline.sources.landing import Quarantine, SiteConfig

MANIFEST_COLUMNS = ["record", "patient_id", "device_kind", "start_time", "duration_s", "sampling_rate_hz"]


@dataclass
class ManifestLoad:
    frame: pd.DataFrame
    received: int
    loaded: int
    quarantined: int
    file_present: bool


def read_manifest(delivery_dir: Path, site: SiteConfig, delivery_id: str, quarantine: Quarantine) -> ManifestLoad:
    """Read `waveforms/manifest.csv`; rows naming a record whose header is missing go to quarantine."""
    wdir = Path(delivery_dir) / "waveforms"
    src = "waveforms_manifest"
    res = read_csv_rows(
        wdir / "manifest.csv", source=src, required=MANIFEST_COLUMNS, quarantine=quarantine,
        site_id=site.site_id, delivery_id=delivery_id,
    )
    df = res.frame
    fname = f"{site.site_id}/{delivery_id}/waveforms/manifest.csv"
    for col in ("record", "patient_id", "device_kind"):
        bad = df[col].isna()
        if bad.any():
            quarantine.reject_rows(src, df[bad], f"missing value: {fname} column {col}")
            df = df[~bad]
    bad = ~df["device_kind"].isin(["ecg_monitor", "ventilator", "wearable"])
    if bad.any():
        quarantine.reject_rows(src, df[bad], f"unknown device_kind: {fname}")
        df = df[~bad]
    parsed = parse_datetimes(df["start_time"], ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ",
                                                 site.datetime_format])
    bad = df["start_time"].notna() & parsed.isna()
    if bad.any():
        quarantine.reject_rows(src, df[bad], f"unparseable date: {fname} column start_time")
    df = df[~bad].copy()
    df["start_time"] = parsed[~bad]
    exists = np.array([(wdir / f"{r}.hea").exists() for r in df["record"]], dtype=bool)
    if (~exists).any():
        quarantine.reject_rows(src, df[~exists], f"record header missing: {fname}")
        df = df[exists]
    for col in ("duration_s", "sampling_rate_hz"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    loaded = len(df)
    return ManifestLoad(df.reset_index(drop=True), res.received, loaded, res.received - loaded, res.file_present)
