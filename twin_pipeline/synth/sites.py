"""Site profiles of the synthetic cohort and the vocabulary the generator draws its codes from.

A *site profile* holds everything that differs between synthetic hospitals: size, age/sex mix,
date formats, site-local lab codes and unit spellings, device mix, ECG sampling rate, small-cell
threshold, the planted miscoding rates and the planted site-level shift of the true treatment effects.
The public part of a profile (what a real site would declare) is written to
``data/sites/<site_id>.yaml``; the miscoding rates and effect shifts are ground truth and are only
written under the truth directory.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

import twin_pipeline

DEVICE_KINDS = ("ecg_monitor", "ventilator", "wearable")


def vocab_dir() -> Path:
    """Return the committed vocabulary folder (``<repo>/data/vocab``)."""
    return Path(twin_pipeline.__file__).parents[1] / "data" / "vocab"


@lru_cache(maxsize=4)
def _read_vocab(directory: str) -> dict[str, pd.DataFrame]:
    d = Path(directory)
    names = ("conditions", "drugs", "measurements", "procedures", "therapies", "unit_conversions",
             "restricted_zip3")
    return {n: pd.read_csv(d / f"{n}.csv", dtype=str, keep_default_na=False) for n in names}


def load_vocab(directory: Path | None = None) -> dict[str, pd.DataFrame]:
    """Read the vocabulary CSVs (all columns as strings) into a dict keyed by file stem."""
    return _read_vocab(str(directory or vocab_dir()))


@dataclass(frozen=True)
class SiteProfile:
    """Conventions and planted properties of one synthetic site.

    ``size_factor`` multiplies the average patients per site; rates are probabilities per patient.
    """

    site_id: str
    name: str
    size_factor: float
    age_mean: float
    age_sd: float
    female_share: float
    date_format: str
    datetime_format: str
    small_cell_threshold: int
    devices: tuple[str, ...]
    ecg_sampling_rate_hz: int
    local_lab_codes: dict[str, str] = field(default_factory=dict)  # local code -> LOINC
    unit_aliases: dict[str, str] = field(default_factory=dict)     # site spelling -> UCUM
    # LOINC -> (emitted code, emitted unit spelling, factor: site value = canonical * factor + offset)
    local_units: dict[str, tuple[str, str, float, float]] = field(default_factory=dict)
    oa_as_ra_rate: float = 0.05
    ra_as_oa_rate: float = 0.03
    t2d_as_t1d_rate: float = 0.02
    t1d_as_t2d_rate: float = 0.03
    asthma_copd_confusion_rate: float = 0.03
    state: str = "MA"
    center_lat: float = 42.36
    center_lon: float = -71.06
    treatment_bias: dict[str, float] = field(default_factory=dict)  # arm -> logit shift
    # arm -> metres added to every patient's true effect of that arm vs standard care at this site
    # (planted between-site effect heterogeneity; ground truth, never in the public site YAML)
    effect_shift: dict[str, float] = field(default_factory=dict)

    def site_yaml(self) -> dict:
        """The public site conventions, as written to ``data/sites/<site_id>.yaml``."""
        return {
            "site_id": self.site_id,
            "name": self.name,
            "country": "US",
            "date_format": self.date_format,
            "datetime_format": self.datetime_format,
            "small_cell_threshold": int(self.small_cell_threshold),
            "local_lab_codes": dict(self.local_lab_codes),
            "unit_aliases": {"*": dict(self.unit_aliases)} if self.unit_aliases else {},
            "devices": list(self.devices),
            "sampling_rates_hz": {
                "ecg_monitor": int(self.ecg_sampling_rate_hz), "ventilator": 50, "wearable": 50,
            },
        }

    def truth_profile(self) -> dict:
        """Generator-side parameters that a real site would not declare (ground truth)."""
        return {
            "site_id": self.site_id,
            "size_factor": self.size_factor,
            "oa_as_ra_rate": self.oa_as_ra_rate,
            "ra_as_oa_rate": self.ra_as_oa_rate,
            "t2d_as_t1d_rate": self.t2d_as_t1d_rate,
            "t1d_as_t2d_rate": self.t1d_as_t2d_rate,
            "asthma_copd_confusion_rate": self.asthma_copd_confusion_rate,
            "age_mean": self.age_mean,
            "female_share": self.female_share,
            "treatment_bias": dict(self.treatment_bias),
            "effect_shift_m": dict(self.effect_shift),
        }


def site_id_for(index: int) -> str:
    """``hospital_a`` … ``hospital_z``, then ``hospital_aa``, ``hospital_ab`` … (0-based index)."""
    letters = string.ascii_lowercase
    n = index
    suffix = ""
    while True:
        suffix = letters[n % 26] + suffix
        n = n // 26 - 1
        if n < 0:
            break
    return f"hospital_{suffix}"


_GLUCOSE_MMOL = ("GLU", "mmol/l", 1 / 18.016, 0.0)
_CREATININE_UMOL = ("CREA", "umol/l", 1 / 0.011312, 0.0)
_WEIGHT_LBS = ("29463-7", "lbs", 1 / 0.45359237, 0.0)
_TEMP_F = ("8310-5", "F", 9 / 5, 32.0)

#: Planted site-level shift of the true pulmonary-rehab effect (metres of 90-day 6MWD), by site index
#: (cycled after ten sites): A +0, B −20, C +15, then a fixed spread (between-site SD ≈ 16 m over ten
#: sites, mean +1.5 m). Colchicine and the antiviral are not shifted: their true effects differ between
#: sites only through the case mix, so heterogeneity tests can contrast a planted and an unplanted arm.
REHAB_EFFECT_SHIFT_M = (0.0, -20.0, 15.0, -10.0, 25.0, -5.0, 10.0, -25.0, 20.0, 5.0)
SHIFTED_ARM = "pulmonary_rehab"


def effect_shift_for(index: int) -> dict[str, float]:
    """The planted effect shift (arm -> metres) of the site with 0-based ``index``."""
    return {SHIFTED_ARM: REHAB_EFFECT_SHIFT_M[index % len(REHAB_EFFECT_SHIFT_M)]}


_STATES = (("MA", 42.36, -71.06), ("NY", 40.71, -74.01), ("NH", 43.21, -71.54),
           ("VT", 44.26, -72.58), ("CT", 41.76, -72.68), ("RI", 41.82, -71.41))


def site_profiles(n_sites: int) -> list[SiteProfile]:
    """Deterministic profiles for ``n_sites`` sites.

    The first three are the reference sites (A: large, ISO dates, all devices, T2D→T1D miscoding;
    B: medium, day-first dates, local glucose/creatinine codes in SI units, 40 % OA→RA miscoding;
    C: small, month-first dates, weight in lbs / temperature in F, ECG at 500 Hz, asthma/COPD
    confusion). Further sites cycle through the three templates with varied rates and mixes.
    Every site gets the planted rehab effect shift ``effect_shift_for(i)`` (ground truth).
    """
    if n_sites < 1:
        raise ValueError(f"sites must be >= 1, got {n_sites}")
    profiles: list[SiteProfile] = []
    for i in range(n_sites):
        sid = site_id_for(i)
        template = i % 3
        cycle = i // 3
        state, lat, lon = _STATES[i % len(_STATES)]
        name = f"Hospital {sid.removeprefix('hospital_').upper()} (synthetic)"
        if template == 0:
            p = SiteProfile(
                site_id=sid, name=name, size_factor=1.4, age_mean=56 + 2 * cycle, age_sd=15,
                female_share=0.56, date_format="%Y-%m-%d", datetime_format="%Y-%m-%dT%H:%M:%SZ",
                small_cell_threshold=5, devices=("ecg_monitor", "ventilator", "wearable"),
                ecg_sampling_rate_hz=250, t2d_as_t1d_rate=0.15, state=state, center_lat=lat,
                center_lon=lon, treatment_bias={"pulmonary_rehab": 0.3},
            )
        elif template == 1:
            aliases = {"mmol/l": "mmol/L", "umol/l": "umol/L"}
            p = SiteProfile(
                site_id=sid, name=name, size_factor=1.0, age_mean=61 + 2 * cycle, age_sd=14,
                female_share=0.50, date_format="%d/%m/%Y", datetime_format="%d/%m/%Y %H:%M",
                small_cell_threshold=3, devices=("ecg_monitor", "wearable"),
                ecg_sampling_rate_hz=250 if cycle % 2 == 0 else 125,
                local_lab_codes={"GLU": "2345-7", "CREA": "2160-0"}, unit_aliases=aliases,
                local_units={"2345-7": _GLUCOSE_MMOL, "2160-0": _CREATININE_UMOL},
                oa_as_ra_rate=0.40, state=state, center_lat=lat, center_lon=lon,
                treatment_bias={"colchicine": 0.4},
            )
        else:
            aliases = {"lbs": "[lb_av]", "F": "[degF]"}
            p = SiteProfile(
                site_id=sid, name=name, size_factor=0.6, age_mean=52 + 2 * cycle, age_sd=17,
                female_share=0.60, date_format="%m/%d/%Y", datetime_format="%m/%d/%Y %H:%M",
                small_cell_threshold=10, devices=("ecg_monitor", "ventilator"),
                ecg_sampling_rate_hz=500 if cycle % 2 == 0 else 360, unit_aliases=aliases,
                local_units={"29463-7": _WEIGHT_LBS, "8310-5": _TEMP_F},
                asthma_copd_confusion_rate=0.20, state=state, center_lat=lat, center_lon=lon,
                treatment_bias={"antiviral": 0.4},
            )
        profiles.append(replace(p, effect_shift=effect_shift_for(i)))
    return profiles


def site_sizes(profiles: list[SiteProfile], patients: int) -> list[int]:
    """Patients per site: ``patients`` on average, split by the profiles' size factors."""
    total = patients * len(profiles)
    weights = [p.size_factor for p in profiles]
    raw = [total * w / sum(weights) for w in weights]
    sizes = [max(2, int(round(r))) for r in raw]
    return sizes


def write_site_yaml(profile: SiteProfile, sites_dir: Path) -> Path:
    """Write ``<sites_dir>/<site_id>.yaml`` (deterministic bytes) and return its path."""
    sites_dir.mkdir(parents=True, exist_ok=True)
    path = sites_dir / f"{profile.site_id}.yaml"
    header = (f"# {profile.name}: site conventions (written by twin_pipeline.synth; "
              "see docs/landing_contract.md)\n")
    body = yaml.safe_dump(profile.site_yaml(), sort_keys=False, default_flow_style=False,
                          allow_unicode=True)
    path.write_text(header + body, encoding="utf-8")
    return path
