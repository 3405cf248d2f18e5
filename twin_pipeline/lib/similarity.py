""""Patients like me": a nearest-neighbour index over the twins, and a small-cell-safe summary.

Features (whatever of these the twin frame has) are mixed:

* numeric (labs, vitals, interview scores, waveform features, reconciled phenotype probabilities):
  z-scored with the cohort mean / standard deviation; a missing value is imputed with the mean
  (0 after scaling) **and** flagged by a missing-indicator column (weight ``MISSING_WEIGHT``), so
  "unknown" is never silently treated as "average": two patients both missing a lab are closer
  than one measured at the mean and one unmeasured;
* categorical (joint pattern, sex): one-hot, scaled by 1/sqrt(2) so that a mismatch adds 1 to the
  squared distance, like a one-standard-deviation difference of a numeric feature.

Therapy and outcome are never features: they are what the neighbours are summarised by.

Search is Euclidean (L2) over the float32 feature matrix with faiss: exact (``IndexFlatL2``) or
approximate (HNSW). Filters (site, age band, sex) never return fewer than ``k`` neighbours when
``k`` twins match: a selective filter (at most ``EXACT_FILTER_MAX`` matching twins) is searched
exactly over the matching rows only; a broad one goes through HNSW with an ID selector and a
search depth scaled by the filter's selectivity, falling back to exact search on the subset when the
graph walk comes back short. No Dagster here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NUMERIC_FEATURES = [
    "age_years", "bmi", "crp_mg_l", "hba1c_pct", "fev1_fvc_pct", "spo2_pct", "sbp_mmhg", "creatinine_mg_dl",
    "baseline_6mwd_m", "days_since_covid", "fatigue_score", "dyspnea_mmrc", "symptom_burden",
    "cognitive_complaints", "post_exertional_malaise", "hr_mean_bpm", "hrv_rmssd_ms", "resting_hr_bpm",
    "p_rheumatoid_arthritis", "p_osteoarthritis", "p_type1_diabetes", "p_type2_diabetes", "p_asthma", "p_copd",
    "dx_hypertension", "dx_heart_failure", "dx_atrial_fibrillation",
]
CATEGORICAL_FEATURES = {"sex": ["M", "F"], "joint_pattern": [0.0, 1.0, 2.0]}
MISSING_WEIGHT = 0.5
FILTER_KEYS = ("site_id", "age_band", "sex")
EXACT_FILTER_MAX = 50_000   # a filter matching at most this many twins is searched exactly
HNSW_MIN_ROWS = 20_000      # "auto" uses exact search below this many twins
DEFAULT_SMALL_CELL = 5


def _sex(twins: pd.DataFrame) -> pd.Series:
    if "sex" in twins:
        return twins["sex"].astype("string")
    if "sex_male" in twins:
        return twins["sex_male"].map({1.0: "M", 0.0: "F"}).astype("string")
    return pd.Series(pd.NA, index=twins.index, dtype="string")


@dataclass
class FeatureSpace:
    """The fitted transform from a twin frame to the search space (means, scales, categories)."""

    numeric: list[str]
    means: np.ndarray
    scales: np.ndarray
    missing_cols: list[str]  # numeric columns that get a missing indicator
    categorical: dict[str, list] = field(default_factory=dict)

    @classmethod
    def fit(cls, twins: pd.DataFrame) -> FeatureSpace:
        numeric = [c for c in NUMERIC_FEATURES if c in twins.columns and twins[c].notna().any()]
        x = twins[numeric].astype("float64")
        means = x.mean().to_numpy()
        scales = x.std(ddof=0).to_numpy()
        scales = np.where(np.isfinite(scales) & (scales > 1e-9), scales, 1.0)
        missing_cols = [c for c in numeric if twins[c].isna().any()]
        cats = {}
        for c, levels in CATEGORICAL_FEATURES.items():
            if c == "sex" and ("sex" in twins or "sex_male" in twins):
                cats[c] = list(levels)
            elif c in twins.columns:
                cats[c] = list(levels)
        return cls(numeric, means, scales, missing_cols, cats)

    @property
    def names(self) -> list[str]:
        out = list(self.numeric) + [f"missing_{c}" for c in self.missing_cols]
        for c, levels in self.categorical.items():
            out += [f"{c}={lv}" for lv in levels]
        return out

    def transform(self, twins: pd.DataFrame) -> np.ndarray:
        n = len(twins)
        blocks = []
        x = twins[self.numeric].astype("float64").to_numpy() if self.numeric else np.zeros((n, 0))
        missing = np.isnan(x)
        z = (x - self.means) / self.scales
        z[missing] = 0.0
        blocks.append(z)
        if self.missing_cols:
            idx = [self.numeric.index(c) for c in self.missing_cols]
            blocks.append(missing[:, idx] * MISSING_WEIGHT)
        for c, levels in self.categorical.items():
            vals = _sex(twins) if c == "sex" else twins[c]
            onehot = np.column_stack([(vals == lv).fillna(False).to_numpy(dtype=bool) for lv in levels])
            blocks.append(onehot / math.sqrt(2.0))
        return np.ascontiguousarray(np.hstack(blocks), dtype=np.float32)


def _faiss():
    import faiss  # noqa: PLC0415 - heavy import, only when an index is built

    return faiss


@dataclass
class SimilarityIndex:
    """Twins in a feature space plus a faiss index; ``query`` returns the nearest twins."""

    person_ids: np.ndarray
    site_ids: np.ndarray
    age_bands: np.ndarray
    sexes: np.ndarray
    vectors: np.ndarray  # float32 (n, d); rows sorted by site, age band, sex
    norms: np.ndarray  # squared L2 norm of each row (float32)
    space: FeatureSpace
    method: str  # "exact" | "hnsw"
    index: object  # faiss index over ``vectors`` (ids = row numbers)
    ef_search: int = 128
    _row_of: dict = field(default_factory=dict, repr=False)
    _groups: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.person_ids)

    # ---- filters -------------------------------------------------------------------------
    def _filter_rows(self, filters: Mapping[str, object] | None) -> np.ndarray | None:
        """Row numbers matching every filter (None = no filter). Values may be a scalar or a list.

        Rows are stored grouped by (site, age band, sex), so the answer is the union of the matching
        groups' [start, stop) ranges: no scan over all twins."""
        if not filters:
            return None
        norm = []
        for key, value in filters.items():
            if key not in FILTER_KEYS:
                raise ValueError(f"unknown similarity filter {key!r}; known: {', '.join(FILTER_KEYS)}")
            wanted = [value] if isinstance(value, str) or not isinstance(value, Iterable) else list(value)
            norm.append((key, tuple(sorted({str(v) for v in wanted}))))
        cache_key = tuple(sorted(norm))
        cache = self._groups.setdefault("_rows", {})
        rows = cache.get(cache_key)
        if rows is None:
            g = self._group_table()
            keep = np.ones(len(g), dtype=bool)
            for key, wanted in cache_key:
                keep &= g[key].isin(wanted).to_numpy()
            sel = g[keep]
            rows = (np.concatenate([np.arange(a, b) for a, b in zip(sel["start"], sel["stop"])])
                    if len(sel) else np.zeros(0, dtype=np.int64))
            if len(cache) >= 512:
                cache.clear()
            cache[cache_key] = rows
        return rows

    def _group_table(self) -> pd.DataFrame:
        g = self._groups.get("_table")
        if g is None:
            key = pd.DataFrame({"site_id": self.site_ids, "age_band": self.age_bands, "sex": self.sexes})
            change = np.ones(len(key), dtype=bool)
            if len(key) > 1:
                change[1:] = (key.iloc[1:].to_numpy() != key.iloc[:-1].to_numpy()).any(axis=1)
            starts = np.flatnonzero(change)
            stops = np.append(starts[1:], len(key))
            g = key.iloc[starts].reset_index(drop=True).assign(start=starts, stop=stops)
            self._groups["_table"] = g
        return g

    def _bitmap(self, rows: np.ndarray) -> np.ndarray:
        cache = self._groups.setdefault("_bitmaps", {})
        key = (len(rows), int(rows[0]) if len(rows) else -1, int(rows[-1]) if len(rows) else -1,
               int(rows.sum()) if len(rows) else 0)
        bm = cache.get(key)
        if bm is None:
            mask = np.zeros(len(self), dtype=bool)
            mask[rows] = True
            bm = np.packbits(mask, bitorder="little")
            if len(cache) >= 64:
                cache.clear()
            cache[key] = bm
        return bm

    # ---- search ----------------------------------------------------------------------------
    def search_vector(self, vector: np.ndarray, k: int, rows: np.ndarray | None = None,
                      exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(row numbers, L2 distances) of the ``k`` nearest twins to ``vector`` (optionally among
        ``rows`` only, never ``exclude``), sorted by distance."""
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        kk = k + (1 if exclude is not None else 0)
        if rows is None:
            kk = min(kk, len(self))
            if self.method == "hnsw":
                params = _faiss().SearchParametersHNSW(efSearch=max(self.ef_search, kk))
                d2, ids = self.index.search(q, kk, params=params)
            else:
                d2, ids = self.index.search(q, kk)
            d2, ids = d2[0], ids[0]
        elif len(rows) <= EXACT_FILTER_MAX or self.method != "hnsw":
            d2, ids = _exact_subset(self.vectors, self.norms, rows, q[0], min(kk, len(rows)))
        else:
            d2, ids = self._hnsw_filtered(q, rows, min(kk, len(rows)))
        keep = ids >= 0
        if exclude is not None:
            keep &= ids != exclude
        d2, ids = d2[keep][:k], ids[keep][:k]
        return ids.astype(np.int64), np.sqrt(np.maximum(d2, 0.0))

    def _hnsw_filtered(self, q: np.ndarray, rows: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        bitmap = self._bitmap(rows)
        sel = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bitmap))
        selectivity = len(rows) / len(self)
        ef = int(min(4096, max(kk, self.ef_search) / max(selectivity, 1e-3) ** 0.5))
        d2, ids = self.index.search(q, kk, params=faiss.SearchParametersHNSW(sel=sel, efSearch=ef))
        d2, ids = d2[0], ids[0]
        if (ids >= 0).sum() < kk:  # graph walk came back short: exact over the subset instead
            return _exact_subset(self.vectors, self.norms, rows, q[0], kk)
        return d2, ids

    def query(self, person_id: str, k: int = 50, same_site: bool = False,
              filters: Mapping[str, object] | None = None) -> pd.DataFrame:
        """The ``k`` twins most similar to ``person_id`` (never itself): columns person_id, site_id,
        distance, sorted by distance. ``same_site`` restricts to the query twin's site; ``filters``
        maps ``site_id`` / ``age_band`` / ``sex`` to a value or a list of values."""
        if not self._row_of:
            self._row_of = {p: i for i, p in enumerate(self.person_ids)}
        row = self._row_of.get(person_id)
        if row is None:
            raise KeyError("person_id is not in the similarity index (unknown pseudonym)")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        f = dict(filters or {})
        if same_site:
            f["site_id"] = str(self.site_ids[row])
        rows = self._filter_rows(f)
        ids, dist = self.search_vector(self.vectors[row], k, rows=rows, exclude=row)
        return pd.DataFrame({
            "person_id": self.person_ids[ids],
            "site_id": self.site_ids[ids],
            "distance": dist.astype("float64"),
        })


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row numbers -> contiguous [start, stop) runs."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(rows)]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


def _exact_subset(vectors: np.ndarray, norms: np.ndarray, rows: np.ndarray, q: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest among ``rows`` (NumPy). Rows are stored sorted by site, age band and sex, so
    a filter's rows are a few contiguous runs: distances are computed on slices, without a gather."""
    runs = _runs(rows)
    if len(runs) <= 64:
        # einsum, not BLAS: a single matrix-vector product does not pay BLAS's thread start-up
        d2 = np.concatenate([norms[a:b] - 2.0 * np.einsum("ij,j->i", vectors[a:b], q) for a, b in runs])
    else:
        d2 = norms[rows] - 2.0 * np.einsum("ij,j->i", vectors[rows], q)
    d2 = d2 + float(np.dot(q, q))
    k = min(k, len(rows))
    part = np.argpartition(d2, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
    order = part[np.argsort(d2[part], kind="stable")]
    return d2[order].astype(np.float32), rows[order]


def build_index(twins: pd.DataFrame, method: str = "auto", *, hnsw_m: int = 32, ef_construction: int = 80,
                ef_search: int = 128) -> SimilarityIndex:
    """Fit the feature space on ``twins`` and index every twin.

    ``method``: ``"exact"`` (faiss ``IndexFlatL2``), ``"hnsw"`` (faiss ``IndexHNSWFlat``, M=``hnsw_m``)
    or ``"auto"`` (exact below ``HNSW_MIN_ROWS`` twins). Twins must have unique ``person_id``s.
    """
    if twins.empty:
        raise ValueError("cannot build a similarity index over zero twins")
    if twins["person_id"].duplicated().any():
        raise ValueError("twins must have one row per person_id (pass one twin version)")
    if method == "auto":
        method = "hnsw" if len(twins) >= HNSW_MIN_ROWS else "exact"
    if method not in ("exact", "hnsw"):
        raise ValueError(f"unknown method {method!r}: exact, hnsw or auto")
    # store rows grouped by the filter keys so a filter's rows are a few contiguous runs
    sort_cols = [c for c in ("site_id", "age_band") if c in twins]
    twins = twins.assign(_sex=_sex(twins).fillna("U")).sort_values(sort_cols + ["_sex"], kind="stable")
    twins = twins.drop(columns="_sex").reset_index(drop=True)
    space = FeatureSpace.fit(twins)
    vectors = space.transform(twins)
    faiss = _faiss()
    d = vectors.shape[1]
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        index = faiss.IndexFlatL2(d)
    index.add(vectors)
    sex = _sex(twins).fillna("U").to_numpy(dtype=object)
    return SimilarityIndex(
        person_ids=twins["person_id"].astype(str).to_numpy(dtype=object),
        site_ids=twins["site_id"].astype(str).to_numpy(dtype=object),
        age_bands=(twins["age_band"].astype(str) if "age_band" in twins
                   else pd.Series("", index=twins.index)).to_numpy(dtype=object),
        sexes=sex,
        vectors=vectors,
        norms=np.einsum("ij,ij->i", vectors, vectors),
        space=space,
        method=method,
        index=index,
        ef_search=ef_search,
    )


# ---- summary of the neighbours (small-cell safe) --------------------------------------------------


def summarize_neighbours(neighbours: pd.DataFrame, twins: pd.DataFrame, *, threshold: int = DEFAULT_SMALL_CELL,
                         therapy_col: str = "therapy", outcome_col: str = "outcome_6mwd_90d_m") -> pd.DataFrame:
    """Per therapy among the neighbours: how many, how many with an observed outcome, and the
    outcome's mean and median. Any group with fewer than ``threshold`` twins is shown as
    ``"<threshold"`` with no outcome figures; if exactly one group is suppressed, the next
    smallest is suppressed too, so the hidden count cannot be recovered from the total.

    Returns one row per therapy (string columns ``n`` / ``n_with_outcome`` so suppressed cells
    carry no number), plus a ``total`` row.
    """
    if threshold < 1:
        raise ValueError("small-cell threshold must be >= 1")
    cols = ["person_id", therapy_col] + ([outcome_col] if outcome_col in twins else [])
    nb = neighbours[["person_id"]].merge(twins[cols].drop_duplicates("person_id"), on="person_id", how="left")
    nb[therapy_col] = nb[therapy_col].astype("object").where(nb[therapy_col].notna(), "unknown")
    if outcome_col not in nb:
        nb[outcome_col] = np.nan
    g = nb.groupby(therapy_col)[outcome_col]
    stats = pd.DataFrame({"count": g.size(), "with_outcome": g.count(), "mean": g.mean(), "median": g.median()})
    stats = stats.sort_values("count", ascending=False)
    small = stats["count"] < threshold
    if small.sum() == 1 and len(stats) > 1:  # complementary suppression
        small.loc[stats.loc[~small, "count"].idxmin()] = True
    out_small = (stats["with_outcome"] < threshold) | small
    hidden = f"<{threshold}"
    rows = []
    for therapy, s in stats.iterrows():
        rows.append({
            "therapy": str(therapy),
            "n": hidden if small[therapy] else str(int(s["count"])),
            "n_with_outcome": hidden if out_small[therapy] else str(int(s["with_outcome"])),
            "outcome_mean": np.nan if out_small[therapy] else round(float(s["mean"]), 1),
            "outcome_median": np.nan if out_small[therapy] else round(float(s["median"]), 1),
        })
    total = len(nb)
    n_out = int(nb[outcome_col].notna().sum())
    rows.append({
        "therapy": "total",
        "n": str(total) if total >= threshold else hidden,
        "n_with_outcome": str(n_out) if n_out >= threshold else hidden,
        "outcome_mean": round(float(nb[outcome_col].mean()), 1) if n_out >= threshold else np.nan,
        "outcome_median": round(float(nb[outcome_col].median()), 1) if n_out >= threshold else np.nan,
    })
    return pd.DataFrame(rows)


def small_cell_threshold(sites_dir, site_ids: Iterable[str], default: int = DEFAULT_SMALL_CELL) -> int:
    """The strictest ``small_cell_threshold`` among the given sites' YAMLs (``default`` when absent)."""
    from pathlib import Path  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    best = 0
    for site in set(site_ids):
        path = Path(sites_dir) / f"{site}.yaml" if sites_dir else None
        value = default
        if path is not None and path.exists():
            value = int((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("small_cell_threshold", default))
        best = max(best, value)
    return best or default
