"""k-anonymity of a released table over its quasi-identifiers (plain functions, no Dagster).

An equivalence class is the set of records sharing one combination of quasi-identifier values
(missing values form their own category). A table is k-anonymous when every class holds at least
k records; the report says how far from that it is, with aggregates only (never a class's values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

__all__ = ["DEFAULT_K", "TWIN_QUASI_IDENTIFIERS", "KAnonymityReport", "k_anonymity", "twin_quasi_identifiers"]

DEFAULT_K = 5
#: the twins' quasi-identifiers: 5-year age band (90+), sex, ZIP3, site
TWIN_QUASI_IDENTIFIERS = ("age_band", "sex", "zip3", "site_id")
_MISSING = "<missing>"


@dataclass(frozen=True)
class KAnonymityReport:
    """Aggregates of the equivalence classes: sizes and how many records sit below k."""

    k: int
    quasi_identifiers: tuple[str, ...]
    records: int
    classes: int
    smallest_class: int          # 0 for an empty table
    median_class: float
    classes_below_k: int
    records_below_k: int
    share_below_k: float         # records_below_k / records (0 for an empty table)
    size_histogram: dict[str, int]  # class size 1..k-1 and ">=k" -> number of classes

    @property
    def is_k_anonymous(self) -> bool:
        return self.records_below_k == 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["quasi_identifiers"] = list(self.quasi_identifiers)
        d["is_k_anonymous"] = self.is_k_anonymous
        return d


def k_anonymity(df: pd.DataFrame, quasi_identifiers: Sequence[str], k: int = DEFAULT_K) -> KAnonymityReport:
    """Equivalence classes of ``df`` over ``quasi_identifiers`` (one record per row) checked against ``k``."""
    if int(k) < 1:
        raise ValueError("k must be >= 1")
    k = int(k)
    qi = tuple(quasi_identifiers)
    missing = [c for c in qi if c not in df.columns]
    if missing:
        raise KeyError(f"quasi-identifier columns missing from the table: {missing}")
    if not qi:
        raise ValueError("at least one quasi-identifier is needed")
    if df.empty:
        return KAnonymityReport(k, qi, 0, 0, 0, 0.0, 0, 0, 0.0, {})
    keys = df.loc[:, list(qi)].astype(object).where(df.loc[:, list(qi)].notna(), _MISSING).astype(str)
    sizes = keys.value_counts(sort=False).to_numpy()
    below = sizes[sizes < k]
    hist = {str(s): int((sizes == s).sum()) for s in range(1, k) if (sizes == s).any()}
    hist[f">={k}"] = int((sizes >= k).sum())
    return KAnonymityReport(
        k=k,
        quasi_identifiers=qi,
        records=int(sizes.sum()),
        classes=int(len(sizes)),
        smallest_class=int(sizes.min()),
        median_class=float(pd.Series(sizes).median()),
        classes_below_k=int(len(below)),
        records_below_k=int(below.sum()),
        share_below_k=float(below.sum() / sizes.sum()),
        size_histogram=hist,
    )


def twin_quasi_identifiers(twins: pd.DataFrame) -> pd.DataFrame:
    """The twins' quasi-identifier columns (``TWIN_QUASI_IDENTIFIERS``): sex from ``gender`` or
    ``sex_male`` (1 → "M", 0 → "F")."""
    out = pd.DataFrame(index=twins.index)
    out["age_band"] = twins["age_band"]
    if "gender" in twins:
        out["sex"] = twins["gender"]
    else:
        out["sex"] = twins["sex_male"].map({1.0: "M", 0.0: "F"})
    out["zip3"] = twins["zip3"]
    out["site_id"] = twins["site_id"]
    return out
