"""Data-quality checks on the harmonized (`omop`) tables of one site delivery, in the style of the
OHDSI Data Quality Dashboard (DQD) and the 4CE consortium's lab checks.

Each check belongs to a DQD category (conformance / completeness / plausibility), counts the rows it
examined and the rows that violate it, and fails when the violation rate exceeds its threshold (in
percent, as DQD thresholds are). Results hold aggregates only: counts overall and per concept or
table, never a row. Which checks block downstream and why:

- blocking: `person_fk` (an event or visit naming no person of the delivery is a broken extract,
  DQD `isForeignKey`, threshold 0 %) and `canonical_unit` (a mapped measurement not in its concept's
  canonical unit is a harmonizer bug: every comparison across sites would be wrong).
- warn: code-format conformance, visit linkage, plausibility (ranges, suspected unit errors, 4CE
  site ranges, dates before birth / after death, negative durations). These describe the data a
  site sent; they are reported per site and concept so the site can fix its extract, but one odd
  value must not hold back a whole delivery. (Mapping coverage is gated separately, blocking.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.lib.harmonize import UNMAPPED, Vocabulary

CATEGORIES = ("conformance", "completeness", "plausibility")
EVENT_TABLES = {  # table -> (start column, end column or None)
    "visit_occurrence": ("visit_start_datetime", "visit_end_datetime"),
    "condition_occurrence": ("condition_start_datetime", "condition_end_datetime"),
    "measurement": ("measurement_datetime", None),
    "drug_exposure": ("drug_exposure_start_datetime", "drug_exposure_end_datetime"),
    "procedure_occurrence": ("procedure_datetime", "procedure_end_datetime"),
    "observation": ("observation_datetime", None),
}
CODE_FORMATS = {  # table -> (concept column, regex of the standard vocabulary's codes)
    "condition_occurrence": ("condition_concept_code", r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$"),  # ICD-10-CM
    "measurement": ("measurement_concept_code", r"^[0-9]{1,7}-[0-9]$"),  # LOINC
    "drug_exposure": ("drug_concept_code", r"^[0-9]+(\+[0-9]+)*$"),  # RxNorm ingredient(s)
}
# canonical unit -> 4CE unit factor for the LOINC codes the 4CE lab file covers (all others are 1)
FOURCE_FACTOR = {"48065-7": 1000.0}  # D-dimer FEU: ug/mL -> ng/mL


@dataclass(frozen=True)
class DqdCheck:
    name: str
    category: str
    table: str
    blocking: bool
    threshold_pct: float
    description: str


CHECKS: tuple[DqdCheck, ...] = (
    DqdCheck("person_fk", "conformance", "visit_occurrence", True, 0.0,
             "Visits and events name a person present in the delivery's person table (DQD isForeignKey)."),
    DqdCheck("standard_code_format", "conformance", "condition_occurrence", False, 0.0,
             "Mapped concept codes match their vocabulary's format (ICD-10-CM, LOINC, RxNorm)."),
    DqdCheck("canonical_unit", "conformance", "measurement", True, 0.0,
             "Every mapped measurement is in its concept's canonical UCUM unit."),
    DqdCheck("event_visit_link", "completeness", "visit_occurrence", False, 5.0,
             "Events that name a visit find it in the delivery's visits (DQD fkVisit completeness)."),
    DqdCheck("value_completeness", "completeness", "measurement", False, 0.0,
             "Mapped measurements carry a numeric value (DQD measureValueCompleteness)."),
    DqdCheck("plausible_value_range", "plausibility", "measurement", False, 1.0,
             "Values inside the concept's plausible range (DQD plausibleValueLow/High)."),
    DqdCheck("unit_error_suspect", "plausibility", "measurement", False, 0.0,
             "Implausible values that a known conversion factor of the concept makes plausible: "
             "probably sent in another unit than declared."),
    DqdCheck("site_unit_shift", "plausibility", "measurement", False, 0.0,
             "Per concept, the site median sits off the typical range by a known conversion factor."),
    DqdCheck("fource_site_range", "plausibility", "measurement", False, 100.0,
             "Site mean ln(value) per LOINC inside the 4CE lab range envelope (informational: 4CE "
             "ranges describe hospitalized COVID-19 patients)."),
    DqdCheck("event_before_birth", "plausibility", "person", False, 0.0,
             "No event dated before the person's birth date (DQD plausibleAfterBirth)."),
    DqdCheck("event_after_death", "plausibility", "person", False, 0.0,
             "No event dated after the person's death date (DQD plausibleBeforeDeath)."),
    DqdCheck("negative_duration", "plausibility", "visit_occurrence", False, 0.0,
             "End not before start for visits, conditions, drugs, procedures (DQD plausibleStartBeforeEnd)."),
)
CHECKS_BY_NAME = {c.name: c for c in CHECKS}


@dataclass
class DqdResult:
    check: DqdCheck
    rows_checked: int
    rows_violated: int
    breakdown: dict[str, int] = field(default_factory=dict)  # violated rows per concept or table
    note: str = ""

    @property
    def pct_violated(self) -> float:
        return 100.0 * self.rows_violated / self.rows_checked if self.rows_checked else 0.0

    @property
    def passed(self) -> bool:
        return self.pct_violated <= self.check.threshold_pct + 1e-12

    def metadata(self, site_id: str) -> dict:
        """Aggregates only: counts, rates, per-concept counts."""
        return {
            "site_id": site_id,
            "category": self.check.category,
            "blocking": self.check.blocking,
            "threshold_pct": self.check.threshold_pct,
            "rows_checked": int(self.rows_checked),
            "rows_violated": int(self.rows_violated),
            "pct_violated": round(self.pct_violated, 4),
            "breakdown": {k: int(v) for k, v in sorted(self.breakdown.items())},
            **({"note": self.note} if self.note else {}),
        }


def _counts(keys: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in keys.value_counts().items()}


def _day(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values).dt.normalize()


# ------------------------------------------------------------------ conformance


def check_person_fk(t: dict[str, pd.DataFrame]) -> DqdResult:
    persons = set(t["person"]["person_id"])
    checked, bad, by = 0, 0, {}
    for table in EVENT_TABLES:
        df = t.get(table)
        if df is None or not len(df):
            continue
        miss = int((~df["person_id"].isin(persons)).sum())
        checked += len(df)
        bad += miss
        if miss:
            by[table] = miss
    return DqdResult(CHECKS_BY_NAME["person_fk"], checked, bad, by)


def check_standard_code_format(t: dict[str, pd.DataFrame]) -> DqdResult:
    checked, bad, by = 0, 0, {}
    for table, (col, rx) in CODE_FORMATS.items():
        df = t.get(table)
        if df is None or not len(df):
            continue
        codes = df[col].astype("string")
        mapped = codes != UNMAPPED
        wrong = mapped & ~codes.fillna("").str.match(rx)
        checked += int(mapped.sum())
        bad += int(wrong.sum())
        if wrong.any():
            by[table] = int(wrong.sum())
    return DqdResult(CHECKS_BY_NAME["standard_code_format"], checked, bad, by)


def check_canonical_unit(meas: pd.DataFrame, vocab: Vocabulary) -> DqdResult:
    canon = vocab.measurements.set_index("loinc_code")["canonical_unit"]
    mapped = meas[meas["measurement_concept_code"] != UNMAPPED]
    expected = mapped["measurement_concept_code"].map(canon)
    wrong = expected.isna() | (mapped["unit_concept_code"].astype("string") != expected)
    return DqdResult(CHECKS_BY_NAME["canonical_unit"], len(mapped), int(wrong.sum()),
                     _counts(mapped.loc[wrong, "measurement_concept_code"]))


# ------------------------------------------------------------------ completeness


def check_event_visit_link(t: dict[str, pd.DataFrame]) -> DqdResult:
    visits = set(t["visit_occurrence"]["visit_id"]) if len(t["visit_occurrence"]) else set()
    checked, bad, by = 0, 0, {}
    for table in ("condition_occurrence", "measurement", "drug_exposure", "procedure_occurrence"):
        df = t.get(table)
        if df is None or not len(df) or "visit_id" not in df:
            continue
        named = df["visit_id"].notna()
        miss = named & ~df["visit_id"].isin(visits)
        checked += int(named.sum())
        bad += int(miss.sum())
        if miss.any():
            by[table] = int(miss.sum())
    return DqdResult(CHECKS_BY_NAME["event_visit_link"], checked, bad, by)


def check_value_completeness(meas: pd.DataFrame) -> DqdResult:
    mapped = meas[meas["measurement_concept_code"] != UNMAPPED]
    empty = mapped["value_as_number"].isna()
    return DqdResult(CHECKS_BY_NAME["value_completeness"], len(mapped), int(empty.sum()),
                     _counts(mapped.loc[empty, "measurement_concept_code"]))


# ------------------------------------------------------------------ plausibility


def check_plausible_value_range(meas: pd.DataFrame, vocab: Vocabulary) -> DqdResult:
    m = vocab.measurements.set_index("loinc_code")
    code = meas["measurement_concept_code"]
    lo, hi = code.map(m["min_plausible"]), code.map(m["max_plausible"])
    has = lo.notna() | hi.notna()
    v = meas["value_as_number"]
    out = has & ((lo.notna() & (v < lo)) | (hi.notna() & (v > hi)))
    return DqdResult(CHECKS_BY_NAME["plausible_value_range"], int(has.sum()), int(out.sum()),
                     _counts(code[out]))


def _conversions(vocab: Vocabulary) -> dict[str, list[tuple[float, float]]]:
    """Per LOINC, the non-identity conversions (factor, offset) into its canonical unit."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in vocab.conversions.itertuples():
        if float(r.factor) == 1.0 and float(r.offset) == 0.0:
            continue
        out.setdefault(r.loinc_code, []).append((float(r.factor), float(r.offset)))
    return out


def unit_error_rows(meas: pd.DataFrame, vocab: Vocabulary) -> pd.Series:
    """True where a value is outside its concept's plausible range but one of the concept's known
    conversions, applied either way (value sent in the other unit under the canonical label, or
    converted twice), lands it inside the range."""
    m = vocab.measurements.set_index("loinc_code")
    conv = _conversions(vocab)
    code = meas["measurement_concept_code"]
    lo, hi = code.map(m["min_plausible"]), code.map(m["max_plausible"])
    v = meas["value_as_number"].astype(float)
    out = pd.Series(False, index=meas.index)
    implausible = (lo.notna() & (v < lo)) | (hi.notna() & (v > hi))
    for loinc, pairs in conv.items():
        sel = implausible & (code == loinc)
        if not sel.any():
            continue
        lo_c, hi_c = float(m.at[loinc, "min_plausible"]), float(m.at[loinc, "max_plausible"])
        rescued = pd.Series(False, index=meas.index)
        for f, o in pairs:
            for cand in (v * f + o, (v - o) / f):
                rescued |= sel & cand.between(lo_c if not math.isnan(lo_c) else -np.inf,
                                              hi_c if not math.isnan(hi_c) else np.inf)
        out |= rescued
    return out


def check_unit_error_suspect(meas: pd.DataFrame, vocab: Vocabulary) -> DqdResult:
    suspect = unit_error_rows(meas, vocab)
    checkable = meas["measurement_concept_code"].isin(set(_conversions(vocab)))
    return DqdResult(CHECKS_BY_NAME["unit_error_suspect"], int(checkable.sum()), int(suspect.sum()),
                     _counts(meas.loc[suspect, "measurement_concept_code"]))


def site_unit_shifts(meas: pd.DataFrame, vocab: Vocabulary, *, min_rows: int = 5) -> dict[str, float]:
    """{LOINC: factor} for concepts whose site median lies outside the typical range while the median
    converted by one of the concept's known factors lies inside it (a whole site sending one unit
    under the label of another: 4CE's site-level unit check)."""
    m = vocab.measurements.set_index("loinc_code")
    if "typical_low" not in m:
        return {}
    conv = _conversions(vocab)
    out = {}
    for loinc, grp in meas.groupby("measurement_concept_code"):
        if loinc not in conv or loinc not in m.index or len(grp) < min_rows:
            continue
        lo, hi = m.at[loinc, "typical_low"], m.at[loinc, "typical_high"]
        if math.isnan(lo) or math.isnan(hi):
            continue
        med = float(grp["value_as_number"].median())
        if lo <= med <= hi:
            continue
        for f, o in conv[loinc]:
            for cand, factor in ((med * f + o, f), ((med - o) / f, 1 / f)):
                if lo <= cand <= hi:
                    out[str(loinc)] = round(factor, 6)
    return out


def check_site_unit_shift(meas: pd.DataFrame, vocab: Vocabulary) -> DqdResult:
    shifts = site_unit_shifts(meas, vocab)
    concepts = meas["measurement_concept_code"].nunique()
    return DqdResult(CHECKS_BY_NAME["site_unit_shift"], int(concepts), len(shifts),
                     {k: int((meas["measurement_concept_code"] == k).sum()) for k in shifts},
                     note="; ".join(f"{k}: median off by factor {v}" for k, v in sorted(shifts.items())))


def load_fource_ranges(path: Path) -> pd.DataFrame:
    """4CE `lab.range.converted.csv` → one envelope per LOINC: min lower and max upper bound of the
    natural-log lab value over the days since admission in the file, in 4CE units."""
    raw = pd.read_csv(path)
    rows = []
    for col in raw.columns:
        mt = re.match(r"^loinc(\d+)\.(\d)_(LB|UB)$", col)
        if mt:
            rows.append({"loinc_code": f"{mt.group(1)}-{mt.group(2)}", "bound": mt.group(3), "value": raw[col]})
    env = {}
    for r in rows:
        e = env.setdefault(r["loinc_code"], {"ln_low": np.inf, "ln_high": -np.inf})
        if r["bound"] == "LB":
            e["ln_low"] = min(e["ln_low"], float(r["value"].min()))
        else:
            e["ln_high"] = max(e["ln_high"], float(r["value"].max()))
    return pd.DataFrame([{"loinc_code": k, **v} for k, v in env.items()]).set_index("loinc_code")


def check_fource_site_range(meas: pd.DataFrame, ranges: pd.DataFrame | None) -> DqdResult:
    check = CHECKS_BY_NAME["fource_site_range"]
    if ranges is None:
        return DqdResult(check, 0, 0, note="4CE lab range file not configured or not found: check not evaluated")
    covered = meas[meas["measurement_concept_code"].isin(ranges.index) & (meas["value_as_number"] > 0)]
    outside = {}
    for loinc, grp in covered.groupby("measurement_concept_code"):
        vals = grp["value_as_number"].astype(float) * FOURCE_FACTOR.get(str(loinc), 1.0)
        mean_ln = float(np.log(vals).mean())
        lo, hi = ranges.at[loinc, "ln_low"], ranges.at[loinc, "ln_high"]
        if not lo <= mean_ln <= hi:
            outside[str(loinc)] = len(grp)
    n = int(covered["measurement_concept_code"].nunique())
    return DqdResult(check, n, len(outside), outside,
                     note=f"{n} LOINC concepts of this delivery are covered by the 4CE lab ranges")


def _event_dates(t: dict[str, pd.DataFrame]):
    for table, (start, end) in EVENT_TABLES.items():
        df = t.get(table)
        if df is None or not len(df):
            continue
        yield table, df, start, end


def check_event_vs_life(t: dict[str, pd.DataFrame], which: str) -> DqdResult:
    person = t["person"].drop_duplicates("person_id").set_index("person_id")
    col = "birth_date" if which == "birth" else "death_date"
    ref = person[col] if col in person else pd.Series(dtype="datetime64[ns]")
    checked, bad, by = 0, 0, {}
    for table, df, start, end in _event_dates(t):
        r = _day(df["person_id"].map(ref))
        s = _day(df[start])
        known = r.notna() & s.notna()
        if which == "birth":
            wrong = known & (s < r)
        else:
            last = _day(df[end]).fillna(s) if end else s
            wrong = known & (last > r)
        checked += int(known.sum())
        bad += int(wrong.sum())
        if wrong.any():
            by[table] = int(wrong.sum())
    return DqdResult(CHECKS_BY_NAME[f"event_{'before_birth' if which == 'birth' else 'after_death'}"],
                     checked, bad, by)


def check_negative_duration(t: dict[str, pd.DataFrame]) -> DqdResult:
    checked, bad, by = 0, 0, {}
    for table, df, start, end in _event_dates(t):
        if not end:
            continue
        s, e = pd.to_datetime(df[start]), pd.to_datetime(df[end])
        both = s.notna() & e.notna()
        wrong = both & (e < s)
        checked += int(both.sum())
        bad += int(wrong.sum())
        if wrong.any():
            by[table] = int(wrong.sum())
    return DqdResult(CHECKS_BY_NAME["negative_duration"], checked, bad, by)


def run_checks(
    tables: dict[str, pd.DataFrame], vocab: Vocabulary, *, fource_ranges: pd.DataFrame | None = None
) -> list[DqdResult]:
    """Every check of `CHECKS`, in order, on the `omop` tables of one delivery."""
    meas = tables["measurement"]
    results = [
        check_person_fk(tables),
        check_standard_code_format(tables),
        check_canonical_unit(meas, vocab),
        check_event_visit_link(tables),
        check_value_completeness(meas),
        check_plausible_value_range(meas, vocab),
        check_unit_error_suspect(meas, vocab),
        check_site_unit_shift(meas, vocab),
        check_fource_site_range(meas, fource_ranges),
        check_event_vs_life(tables, "birth"),
        check_event_vs_life(tables, "death"),
        check_negative_duration(tables),
    ]
    assert [r.check.name for r in results] == [c.name for c in CHECKS]
    return results


def summary(results: list[DqdResult]) -> dict[str, dict[str, int]]:
    """{category: {checks, passed, failed}}: the DQD overview for one delivery."""
    out = {c: {"checks": 0, "passed": 0, "failed": 0} for c in CATEGORIES}
    for r in results:
        s = out[r.check.category]
        s["checks"] += 1
        s["passed" if r.passed else "failed"] += 1
    return out
