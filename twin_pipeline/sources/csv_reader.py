"""Row-exact CSV reading with quarantine of malformed lines, shared by the landing readers.

Every data row keeps its 1-based line number in the file (`_source_row`) for lineage; a line with the
wrong number of fields is rejected with a reason instead of shifting its neighbours.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.landing import Quarantine

csv.field_size_limit(10_000_000)


@dataclass
class ReadResult:
    frame: pd.DataFrame  # all columns as str (None for empty), plus _source_file, _source_row
    received: int  # data lines seen (good + bad)
    file_present: bool


def read_csv_rows(
    path: Path,
    *,
    source: str,
    required: list[str],
    quarantine: Quarantine,
    site_id: str,
    delivery_id: str,
) -> ReadResult:
    """Read a CSV as strings. Missing required columns quarantine the whole file (reason names them)."""
    cols_out = list(required) + ["_source_file", "_source_row"]
    if not path.exists():
        return ReadResult(pd.DataFrame({c: pd.Series(dtype=object) for c in cols_out}), 0, False)
    good: list[list[str]] = []
    lines: list[int] = []
    bad: list[dict] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                quarantine.reject_file(source, path, f"empty file: {site_id}/{delivery_id}/{path.name}")
                return ReadResult(pd.DataFrame({c: pd.Series(dtype=object) for c in cols_out}), 0, True)
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                quarantine.reject_file(
                    source,
                    path,
                    f"missing columns: {site_id}/{delivery_id}/{path.name} lacks {missing}",
                )
                n = sum(1 for _ in reader)
                return ReadResult(pd.DataFrame({c: pd.Series(dtype=object) for c in cols_out}), n, True)
            width = len(header)
            prev_line = reader.line_num
            for row in reader:
                line_no = prev_line + 1
                prev_line = reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    bad.append({"_source_row": line_no, "_raw": ",".join(row)})
                    continue
                good.append(row)
                lines.append(line_no)
    except (UnicodeDecodeError, csv.Error) as exc:
        quarantine.reject_file(
            source, path, f"unreadable csv: {site_id}/{delivery_id}/{path.name}: {type(exc).__name__}"
        )
        return ReadResult(pd.DataFrame({c: pd.Series(dtype=object) for c in cols_out}), 0, True)

    frame = pd.DataFrame(good, columns=header, dtype=object) if good else pd.DataFrame(columns=header, dtype=object)
    frame = frame.replace({"": None})
    frame["_source_file"] = path.name
    frame["_source_row"] = np.asarray(lines, dtype="int64")
    if bad:
        bad_df = pd.DataFrame(bad)
        bad_df["_source_file"] = path.name
        quarantine.reject_rows(
            source, bad_df, f"wrong field count: {site_id}/{delivery_id}/{path.name} (expected {width})"
        )
    return ReadResult(frame, len(good) + len(bad), True)


def parse_datetimes(values: pd.Series, formats: list[str]) -> pd.Series:
    """Parse strings with the first of `formats` that fits each value; None stays NaT, misfits → NaT.

    Callers compare `isna()` before and after to find unparseable values.
    """
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    todo = values.notna()
    for fmt in formats:
        if not todo.any():
            break
        parsed = pd.to_datetime(values[todo], format=fmt, errors="coerce", utc=fmt.endswith("Z") or "%z" in fmt)
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert(None)
        ok = parsed.notna()
        out.loc[ok[ok].index] = parsed[ok].astype("datetime64[ns]")
        todo = todo & out.isna()
    return out


def date_formats(date_format: str, datetime_format: str) -> list[str]:
    """Formats to try for a date-like column: the site's datetime and date formats, then ISO variants."""
    fmts = [datetime_format, date_format, "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]
    seen: list[str] = []
    for f in fmts:
        if f and f not in seen:
            seen.append(f)
    return seen
