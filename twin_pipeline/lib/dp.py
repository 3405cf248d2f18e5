"""Differential privacy on the 4CE count files a site releases (OpenDP), with a per-site ε ledger.

Optional and off by default. When on, one *release* (one build of a site's shareable files) spends
`epsilon` (pure ε-DP, add/remove-one-patient neighbours), split across the files it covers by sequential
composition (`DP_SHARES`, the same patients feed every file):

- **AgeSex** (share 0.5): noise is added to the *finest* cells only, over a public cell list
  (`AGE_SEX_CELLS`: the 10 4CE age groups + `other` × female/male/other, zero cells included so the
  released row set does not depend on the data). A patient is in exactly one cell and adds 1 to its
  `pts_all` and at most 1 to its `pts_ever_severe`: L1 sensitivity 2. The `all` margins are sums of the
  noised cells before clamping (post-processing, free; unbiased, but a margin over c cells has √c times
  the cell noise). `mean_age` is not a count and is not released (`-999`).
- **DiagProcMed** (share 0.5): a patient counts in many (concept × window) cells (median 9, max 24 on the
  demo cohort; windows overlap). Contributions are bounded: a patient with more than
  `max_cells_per_patient` cells keeps a uniformly random subset of that many (this biases such cells
  down a little); then the L1 sensitivity is `max_cells_per_patient`. Rows come from a public concept
  list (`public_dpm_concepts`: the committed vocabulary's ICD-10 3-character codes, drug classes and
  procedure codes); concepts outside it are not released in DP mode.
- **Labs** and **DailyCounts** are withheld (released header-only) in DP mode: Labs carries means and
  standard deviations that are not counts, and a patient moves every later day of a cumulative daily
  series over a data-dependent date range, so neither has a bounded sensitivity here.

Noise is OpenDP's `make_laplace` on integer vectors (discrete Laplace, P(k) ∝ exp(-|k|/scale)) with
`scale = sensitivity / ε_file`; the ε charged is the measurement's own privacy map at that sensitivity.
Post-processing (free): clamp at 0, `pts_ever_severe ≤ pts_all`; counts stay integers. The caller then
applies the 4CE obfuscation (`federated.obfuscate`) exactly as without DP.

The ledger (`PrivacyLedger`, a JSON file at the site) records release ids, files, ε and timestamps only;
a release that would exceed the site's total budget is refused before any noise is drawn.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import opendp.prelude as dp
import pandas as pd

from twin_pipeline.lib import federated as fed

dp.enable_features("contrib")

DEFAULT_EPSILON = 1.0  # ε per release when DP is switched on without a value
DEFAULT_TOTAL_BUDGET = 10.0  # ε per site over all its releases (sequential composition)
DEFAULT_MAX_CELLS_PER_PATIENT = 16  # DiagProcMed contribution bound (demo cohort: median 9, 90th pct 15)
DP_SHARES = {"AgeSex": 0.5, "DiagProcMed": 0.5}  # fraction of a release's ε per file (sums to 1)
DP_WITHHELD = ("Labs", "DailyCounts")  # not released in DP mode (see module docstring)
AGE_SEX_CELLS = fed.AGE_SEX_CELLS
AGE_SEX_SENSITIVITY = 2  # one cell: pts_all +1, pts_ever_severe +≤1
_EPS_TOL = 1e-9


class PrivacyBudgetExceeded(RuntimeError):
    """A release would take a site past its total ε budget."""


# --------------------------------------------------------------------------------------- mechanism


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    """Noise scale (in patients) that makes a sensitivity-`sensitivity` count vector ε-DP."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if not sensitivity > 0:
        raise ValueError(f"sensitivity must be > 0, got {sensitivity}")
    return float(sensitivity) / float(epsilon)


def count_measurement(sensitivity: int, epsilon: float):
    """OpenDP measurement: discrete Laplace noise on a vector of integer counts with L1 sensitivity
    `sensitivity`, ε-DP. Returns (measurement, scale, ε from the measurement's privacy map)."""
    scale = laplace_scale(sensitivity, epsilon)
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    meas = space >> dp.m.then_laplace(scale=scale)
    eps = float(meas.map(int(sensitivity)))
    if eps > epsilon * (1 + 1e-6):
        raise ValueError(f"OpenDP privacy map gives ε={eps} > requested {epsilon} at scale {scale}")
    return meas, scale, eps


def noisy_counts(counts: Sequence[int], sensitivity: int, epsilon: float) -> tuple[np.ndarray, float, float]:
    """Discrete-Laplace-noised copy of `counts` (integers, may be negative before post-processing).
    Returns (noised counts, scale, ε charged)."""
    meas, scale, eps = count_measurement(sensitivity, epsilon)
    values = [int(c) for c in counts]
    if not values:
        return np.zeros(0, dtype=np.int64), scale, eps
    return np.asarray(meas(values), dtype=np.int64), scale, eps


def noise_sd(scale: float) -> float:
    """Standard deviation (patients) of discrete Laplace noise with this scale: sqrt(2p)/(1-p), p=e^(-1/scale)."""
    p = math.exp(-1.0 / scale)
    return math.sqrt(2.0 * p) / (1.0 - p)


def abs_error_bound(scale: float, alpha: float = 0.05) -> float:
    """|noise| stays within this many patients with probability 1 - alpha (OpenDP's accuracy helper)."""
    return float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))


# --------------------------------------------------------------------------------------- files


@dataclass
class DpFileReport:
    """Aggregates describing the noise on one released file (safe for metadata)."""

    file: str
    epsilon: float
    sensitivity: int
    scale: float
    noise_sd: float
    abs_error_95: float
    extra: dict = field(default_factory=dict)

    def as_metadata(self) -> dict:
        return {"dp_epsilon_file": self.epsilon, "dp_sensitivity": self.sensitivity, "dp_noise_scale": self.scale,
                "dp_noise_sd": round(self.noise_sd, 3), "dp_abs_error_95": round(self.abs_error_95, 3),
                **self.extra}


def _report(file: str, sensitivity: int, scale: float, eps: float, **extra) -> DpFileReport:
    return DpFileReport(file=file, epsilon=eps, sensitivity=sensitivity, scale=scale, noise_sd=noise_sd(scale),
                        abs_error_95=abs_error_bound(scale), extra=extra)


def dp_age_sex(site_id: str, patients: pd.DataFrame, epsilon: float) -> tuple[pd.DataFrame, DpFileReport]:
    """AgeSex (4CE layout, not yet obfuscated) from noised finest cells and their summed margins.

    `patients`: one row per cohort patient with `age_group`, `sex`, `severe` (`federated.age_sex_patients`)."""
    missing = {"age_group", "sex", "severe"} - set(patients.columns)
    if missing:
        raise ValueError(f"{site_id}: AgeSex patients table lacks columns {sorted(missing)}")
    try:
        true = fed.age_sex_cell_counts(patients)
    except ValueError as exc:
        raise ValueError(f"{site_id}: {exc}") from None
    n = len(true)
    noisy, scale, eps = noisy_counts(np.concatenate([true["pts_all"], true["pts_ever_severe"]]),
                                     AGE_SEX_SENSITIVITY, epsilon)
    cells = true.assign(pts_all=noisy[:n], pts_ever_severe=noisy[n:])
    # margins are sums of the *unclamped* noised cells (unbiased); then every row is clamped to
    # 0 ≤ pts_ever_severe ≤ pts_all ≤ the all × all total (consistency for cross-site QC)
    out = fed.with_age_sex_margins(cells, ["pts_all", "pts_ever_severe"])
    total = max(int(out["pts_all"].iloc[-1]), 0)
    out["pts_all"] = out["pts_all"].astype("int64").clip(lower=0, upper=total)
    out["pts_ever_severe"] = np.minimum(out["pts_ever_severe"].astype("int64").clip(lower=0), out["pts_all"])
    out = pd.DataFrame({
        "siteid": site_id, "cohort": fed.COHORT, "age_group": out["age_group"],
        "mean_age": float(fed.NOT_AVAILABLE), "sex": out["sex"],
        "pts_all": out["pts_all"].astype("int64"), "pts_ever_severe": out["pts_ever_severe"].astype("int64"),
    })
    return out, _report("AgeSex", AGE_SEX_SENSITIVITY, scale, eps)


def public_dpm_concepts(vocab_dir: Path | None = None) -> list[tuple[str, str]]:
    """The public DiagProcMed row list: (concept_type, concept_code) for every ICD-10 3-character code,
    drug class and procedure code in the committed vocabulary (the same codes the pipeline maps to)."""
    from twin_pipeline.lib.harmonize import load_vocabulary

    v = load_vocabulary(vocab_dir)
    icd = {c[:3] for c in v.conditions["icd10cm_code"] if len(c) >= 3}
    classes = {c for c in v.drugs["drug_class"] if c}
    procs = {c for c in v.procedures["standard_code"] if c}
    return ([("DIAG-ICD10", c) for c in sorted(icd)] + [("MED-CLASS", c) for c in sorted(classes)]
            + [("PROC-GROUP", c) for c in sorted(procs)])


def bound_contributions(cells: pd.DataFrame, max_cells: int, rng: np.random.Generator) -> pd.DataFrame:
    """Keep at most `max_cells` rows per `person_id`, a uniformly random subset for patients above it."""
    if max_cells < 1:
        raise ValueError(f"max_cells_per_patient must be ≥ 1, got {max_cells}")
    if cells.empty:
        return cells
    order = rng.permutation(len(cells))
    shuffled = cells.iloc[order]
    rank = shuffled.groupby("person_id").cumcount()
    return shuffled[rank.to_numpy() < max_cells].sort_index()


def dp_diag_proc_med(site_id: str, cells: pd.DataFrame, epsilon: float, concepts: Sequence[tuple[str, str]], *,
                     max_cells_per_patient: int = DEFAULT_MAX_CELLS_PER_PATIENT,
                     rng: np.random.Generator | None = None) -> tuple[pd.DataFrame, DpFileReport]:
    """DiagProcMed (4CE layout, not yet obfuscated) over the public concept list, with contribution bounding.

    `cells`: distinct (person_id, concept_type, concept_code, window) rows (`federated.dpm_patient_cells`)."""
    rng = rng if rng is not None else np.random.default_rng()
    if not concepts:
        raise ValueError(f"{site_id}: empty public concept list for DiagProcMed")
    bad = set(cells["window"]) - set(fed.DPM_WINDOWS)
    if bad:
        raise ValueError(f"{site_id}: DiagProcMed cells with unknown windows {sorted(bad)}")
    domain = set(concepts)
    inside = pd.Series([(t, c) in domain for t, c in zip(cells["concept_type"], cells["concept_code"])],
                       index=cells.index, dtype=bool)
    outside = int(cells.loc[~inside, ["concept_type", "concept_code"]].drop_duplicates().shape[0])
    per_patient = cells[inside].groupby("person_id").size()
    clipped = int((per_patient > max_cells_per_patient).sum())
    bounded = bound_contributions(cells[inside], max_cells_per_patient, rng)
    key = pd.MultiIndex.from_tuples(list(concepts), names=["concept_type", "concept_code"])
    true = (bounded.groupby(["concept_type", "concept_code", "window"]).size().unstack("window")
            .reindex(index=key, columns=list(fed.DPM_WINDOWS)).fillna(0).astype("int64"))
    flat = true.to_numpy().ravel()
    noisy, scale, eps = noisy_counts(flat, max_cells_per_patient, epsilon)
    values = np.clip(noisy, 0, None).reshape(true.shape)
    out = pd.DataFrame(values, columns=list(fed.DPM_WINDOWS))
    out.insert(0, "concept_code", [c for _, c in concepts])
    out.insert(0, "concept_type", [t for t, _ in concepts])
    out.insert(0, "cohort", fed.COHORT)
    out.insert(0, "siteid", site_id)
    return out, _report("DiagProcMed", max_cells_per_patient, scale, eps, dp_public_concepts=len(concepts),
                        dp_concepts_outside_public_list=outside, dp_patients_clipped=clipped)


def split_epsilon(epsilon: float) -> dict[str, float]:
    """Per-file ε of one release (sequential composition over `DP_SHARES`)."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    return {f: epsilon * s for f, s in DP_SHARES.items()}


# --------------------------------------------------------------------------------------- ledger


class PrivacyLedger:
    """Per-site ε accounting across releases (sequential composition: spent = Σ ε of past releases).

    A JSON file holding only release ids, files, ε and timestamps. `charge` checks and appends under an
    exclusive file lock, so two concurrent releases cannot both pass the budget check."""

    def __init__(self, path: Path, site_id: str, total_budget: float):
        if not total_budget > 0:
            raise ValueError(f"{site_id}: total privacy budget must be > 0, got {total_budget}")
        self.path = Path(path)
        self.site_id = site_id
        self.total_budget = float(total_budget)

    def _read(self) -> dict:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return {"site_id": self.site_id, "releases": []}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.site_id}: privacy ledger {self.path} is not valid JSON ({exc.msg})") from None
        if data.get("site_id") != self.site_id:
            raise ValueError(f"privacy ledger {self.path} belongs to site {data.get('site_id')!r}, not {self.site_id!r}")
        return data

    def releases(self) -> list[dict]:
        return list(self._read()["releases"])

    def spent(self) -> float:
        return float(sum(r["epsilon"] for r in self.releases()))

    def remaining(self) -> float:
        return max(self.total_budget - self.spent(), 0.0)

    def charge(self, release_id: str, files: dict[str, float]) -> dict:
        """Record a release of `files` ({4CE file: ε}) or raise `PrivacyBudgetExceeded` (nothing recorded).
        Returns {"spent": ε after this release, "remaining": ε left, "epsilon": ε of this release}."""
        requested = float(sum(files.values()))
        if not requested > 0:
            raise ValueError(f"{self.site_id}: a release must spend ε > 0, got {requested}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(self.path.suffix + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            spent = float(sum(r["epsilon"] for r in data["releases"]))
            if spent + requested > self.total_budget + _EPS_TOL:
                raise PrivacyBudgetExceeded(
                    f"site {self.site_id}: privacy budget exhausted: spent ε={spent:g} of total ε={self.total_budget:g}, "
                    f"this release requests ε={requested:g} (remaining ε={max(self.total_budget - spent, 0):g}); "
                    "release refused"
                )
            data["releases"].append({
                "release_id": str(release_id), "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": {k: float(v) for k, v in files.items()}, "epsilon": requested,
            })
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)
        return {"spent": spent + requested, "remaining": max(self.total_budget - spent - requested, 0.0),
                "epsilon": requested}
