"""The landing area: deliveries, their readiness marker, site conventions, and quarantine.

See docs/landing_contract.md. Everything under the landing and quarantine roots is PHI zone.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

SITE_ID_RE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
DELIVERY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
READY_MARKER = "_READY"


class LandingError(Exception):
    """A delivery that cannot be read at all (names site and delivery, never patient data)."""


@dataclass(frozen=True)
class Delivery:
    site_id: str
    delivery_id: str
    path: Path


@dataclass
class SiteConfig:
    site_id: str
    name: str = ""
    country: str = "US"
    date_format: str = "%Y-%m-%d"
    datetime_format: str = "%Y-%m-%dT%H:%M:%SZ"
    small_cell_threshold: int = 5
    local_lab_codes: dict[str, str] = field(default_factory=dict)
    unit_aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    sampling_rates_hz: dict[str, float] = field(default_factory=dict)

    def unit_alias(self, loinc: str, unit: str) -> str:
        """Site spelling → UCUM, looked up for the LOINC code first, then for all codes ('*')."""
        for scope in (loinc, "*"):
            table = self.unit_aliases.get(scope) or {}
            if unit in table:
                return table[unit]
        return unit


def load_site_config(sites_dir: Path, site_id: str) -> SiteConfig:
    """Read `<sites_dir>/<site_id>.yaml`; a site without a file uses ISO dates and UCUM units."""
    if not SITE_ID_RE.match(site_id):
        raise LandingError(f"invalid site id {site_id!r}: expected [a-z][a-z0-9_]{{1,31}}")
    path = Path(sites_dir) / f"{site_id}.yaml"
    if not path.exists():
        return SiteConfig(site_id=site_id)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LandingError(f"site config {path} is not valid YAML: {exc}") from None
    if raw.get("site_id", site_id) != site_id:
        raise LandingError(f"site config {path} declares site_id {raw.get('site_id')!r}, expected {site_id!r}")
    known = {f for f in SiteConfig.__dataclass_fields__}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise LandingError(f"site config {path} has unknown keys {unknown}")
    raw["site_id"] = site_id
    raw["local_lab_codes"] = {str(k): str(v) for k, v in (raw.get("local_lab_codes") or {}).items()}
    raw["unit_aliases"] = {
        str(scope): {str(k): str(v) for k, v in (table or {}).items()}
        for scope, table in (raw.get("unit_aliases") or {}).items()
    }
    return SiteConfig(**raw)


def find_deliveries(landing_dir: Path) -> list[Delivery]:
    """Every complete delivery (`_READY` present), sorted by site then date. Half-copied ones are skipped."""
    landing_dir = Path(landing_dir)
    if not landing_dir.exists():
        return []
    found = []
    for site in sorted(landing_dir.iterdir()):
        if not site.is_dir() or not SITE_ID_RE.match(site.name):
            continue
        for delivery in sorted(site.iterdir()):
            if delivery.is_dir() and DELIVERY_RE.match(delivery.name) and (delivery / READY_MARKER).exists():
                found.append(Delivery(site.name, delivery.name, delivery))
    return found


def delivery_date(delivery_id: str) -> dt.date:
    return dt.date.fromisoformat(delivery_id)


@dataclass
class Quarantine:
    """Collects rejected rows/files of one site delivery with a reason, then writes them to disk.

    Files land in `<quarantine_dir>/<site>/<delivery>/<source>.csv` with the raw row, its source file and
    row number, and the reason. Counts by reason are the only thing that leaves (as metadata).
    """

    root: Path
    site_id: str
    delivery_id: str
    _rows: dict[str, list[dict]] = field(default_factory=dict)
    _files: list[dict] = field(default_factory=list)

    def reject_rows(self, source: str, rows: pd.DataFrame, reason: str | pd.Series) -> None:
        """Quarantine rows with one reason, or a per-row reason Series aligned on `rows`."""
        if rows.empty:
            return
        out = rows.copy()
        out["_reason"] = reason
        self._rows.setdefault(source, []).extend(out.astype(object).where(out.notna(), None).to_dict("records"))

    def reject_file(self, source: str, path: Path, reason: str) -> None:
        self._files.append({"source": source, "file": str(path.name), "reason": reason})

    def count(self, source: str | None = None) -> int:
        if source is None:
            return sum(len(v) for v in self._rows.values()) + len(self._files)
        return len(self._rows.get(source, [])) + sum(1 for f in self._files if f["source"] == source)

    def reasons(self, source: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for src, rows in self._rows.items():
            if source is not None and src != source:
                continue
            for r in rows:
                key = str(r["_reason"]).split(":")[0]
                counts[key] = counts.get(key, 0) + 1
        for f in self._files:
            if source is None or f["source"] == source:
                key = f["reason"].split(":")[0]
                counts[key] = counts.get(key, 0) + 1
        return counts

    def write(self, sources: list[str] | None = None) -> Path:
        """Write (replacing earlier runs' files for these sources, so re-runs are idempotent)."""
        out_dir = self.root / self.site_id / self.delivery_id
        out_dir.mkdir(parents=True, exist_ok=True)
        for src in sources or list(self._rows):
            path = out_dir / f"{src}.csv"
            rows = self._rows.get(src, [])
            if not rows:
                path.unlink(missing_ok=True)
                continue
            fieldnames: list[str] = []
            for r in rows:
                for k in r:
                    if k not in fieldnames:
                        fieldnames.append(k)
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(rows)
        files = [f for f in self._files if sources is None or f["source"] in sources]
        files_path = out_dir / ("_files__" + "_".join(sorted(sources or ["all"])) + ".csv")
        if files:
            pd.DataFrame(files).to_csv(files_path, index=False)
        else:
            files_path.unlink(missing_ok=True)
        return out_dir
