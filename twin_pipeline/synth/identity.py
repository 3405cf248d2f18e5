"""Realistic (fake) direct identifiers for synthetic patients: the PHI the pipeline must remove.

Names, SSN, driver's licence, passport, MRN, phone, address, ZIP (with a few restricted ZIP3s),
coordinates and exact birth dates, drawn from a seeded ``Faker`` and a numpy ``Generator`` so the
same seed gives the same people.
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pandas as pd
from faker import Faker

from twin_pipeline.synth.sites import SiteProfile

_STATE_NAMES = {"MA": "Massachusetts", "NY": "New York", "NH": "New Hampshire", "VT": "Vermont",
                "CT": "Connecticut", "RI": "Rhode Island"}
_RACES = ("white", "black", "asian", "hawaiian", "native", "other")
_RACE_P = (0.70, 0.12, 0.10, 0.01, 0.02, 0.05)
_RELATIONS_F = ("daughter", "wife", "sister", "mother", "partner")
_RELATIONS_M = ("son", "husband", "brother", "father", "partner")


def faker_for(seed: int, site_index: int) -> Faker:
    """A US-English Faker seeded per (seed, site) so sites are independent and reproducible."""
    fake = Faker("en_US")
    fake.seed_instance(int(seed) * 1009 + int(site_index))
    return fake


def _unique_mrns(n: int, site_index: int, rng: np.random.Generator) -> list[str]:
    prefix = 1 + site_index % 9
    seen: set[int] = set()
    out: list[str] = []
    while len(out) < n:
        v = int(rng.integers(0, 10_000_000))
        if v not in seen:
            seen.add(v)
            out.append(f"{prefix}{v:07d}")
    return out


def identities_generate(cohort: pd.DataFrame, profile: SiteProfile, site_index: int,
                        fake: Faker, rng: np.random.Generator,
                        restricted_zip3: list[str]) -> pd.DataFrame:
    """One identity row per cohort row (same order): ids, names, documents, contact and address.

    ``BIRTHDATE`` is exact (date) and consistent with ``age_at_index`` at ``index_date``.
    About 4 % of patients live in a restricted ZIP3 area (``restricted_zip3``).
    """
    n = len(cohort)
    rows = []
    mrns = _unique_mrns(n, site_index, rng)
    state_name = _STATE_NAMES.get(profile.state, profile.state)
    for i, rec in enumerate(cohort.itertuples(index=False)):
        female = bool(rec.female)
        first = fake.first_name_female() if female else fake.first_name_male()
        last = fake.last_name()
        marital = str(rng.choice(["M", "S", "D", "W"], p=[0.55, 0.25, 0.12, 0.08]))
        prefix = ("Mrs." if marital in ("M", "W") else "Ms.") if female else "Mr."
        suffix = "Jr." if (not female and rng.random() < 0.03) else ""
        maiden = fake.last_name() if (female and marital in ("M", "W", "D")) else ""
        days_old = int(round(float(rec.age_at_index) * 365.25)) + int(rng.integers(0, 2))
        birth = rec.index_date - dt.timedelta(days=days_old)
        if rng.random() < 0.04 and restricted_zip3:
            zip_code = f"{restricted_zip3[int(rng.integers(0, len(restricted_zip3)))]}" \
                       f"{int(rng.integers(0, 100)):02d}"
        else:
            zip_code = fake.zipcode_in_state(profile.state)
        relation_f = rng.random() < 0.5
        rel_first = fake.first_name_female() if relation_f else fake.first_name_male()
        rel_last = last if rng.random() < 0.7 else fake.last_name()
        rows.append({
            "Id": str(_uuid(rng)),
            "BIRTHDATE": birth,
            "DEATHDATE": None,
            "SSN": fake.ssn(),
            "DRIVERS": fake.bothify("S99######"),
            "PASSPORT": fake.bothify("X########X"),
            "PREFIX": prefix,
            "FIRST": first,
            "LAST": last,
            "SUFFIX": suffix,
            "MAIDEN": maiden,
            "MARITAL": marital,
            "RACE": str(rng.choice(_RACES, p=_RACE_P)),
            "ETHNICITY": "hispanic" if rng.random() < 0.15 else "nonhispanic",
            "GENDER": "F" if female else "M",
            "BIRTHPLACE": f"{fake.city()}  {fake.state()}  US",
            "ADDRESS": fake.street_address(),
            "CITY": fake.city(),
            "STATE": state_name,
            "COUNTY": f"{fake.last_name()} County",
            "ZIP": zip_code,
            "LAT": round(profile.center_lat + float(rng.normal(0, 0.12)), 8),
            "LON": round(profile.center_lon + float(rng.normal(0, 0.12)), 8),
            "HEALTHCARE_EXPENSES": round(float(rng.gamma(2.0, 40000.0)), 2),
            "HEALTHCARE_COVERAGE": round(float(rng.gamma(2.0, 15000.0)), 2),
            "MRN": mrns[i],
            "PHONE": fake.phone_number(),
            "relative_relation": str(rng.choice(_RELATIONS_F if relation_f else _RELATIONS_M)),
            "relative_name": f"{rel_first} {rel_last}",
        })
    return pd.DataFrame(rows)


def _uuid(rng: np.random.Generator) -> uuid.UUID:
    """A version-4 UUID drawn from ``rng`` (reproducible, unlike ``uuid.uuid4``)."""
    return uuid.UUID(bytes=rng.bytes(16), version=4)
