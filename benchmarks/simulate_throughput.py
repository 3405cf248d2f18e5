"""Treatment-simulation throughput: vectorised chunked simulation vs a naive per-twin loop, same models.

A *simulation* is one model-evaluated outcome for a (twin, therapy, ensemble member) triple; the outcome
noise draws added on top (``--draws`` per twin × therapy) are not counted. Both sides use the same
bootstrap ensemble of T-learners fitted on a generated cohort (``effects.generator_twins``). The naive
loop calls ``predict_outcomes`` once per twin and member on a sample of twins and is extrapolated
(linear in twins) — stated in the table. Peak memory = tracemalloc peak of the vectorised call (numpy
and scikit-learn buffers), plus the process max RSS at the end. Median of ``--repeats`` runs.

    .venv/bin/python benchmarks/simulate_throughput.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import tracemalloc

import numpy as np
import pandas as pd

from twin_pipeline.lib import effects, simulate
from twin_pipeline.lib.twin import MODEL_FEATURES


def tile_twins(base: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` twins resampled from ``base`` with small jitter on continuous features (distinct rows)."""
    rng = np.random.default_rng(seed)
    X = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
    for c in ("age_years", "baseline_6mwd_m", "crp_mg_l", "bmi", "days_since_covid"):
        X[c] = X[c] * (1 + rng.normal(0, 0.02, n))
    X["person_id"] = [f"b{i}" for i in range(n)]
    return X


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-sample", type=int, default=300)
    args = ap.parse_args()

    base, _ = effects.generator_twins(3000, seed=1)
    ens = effects.fit_ensemble(base, MODEL_FEATURES, n_models=args.members, seed=0)
    n_arms = len(effects.ARMS)
    cols = ["site_id", "person_id"] + MODEL_FEATURES

    # naive loop: one predict call per twin and member (sampled, then extrapolated per twin)
    Xs = tile_twins(base, args.naive_sample, seed=99)[cols]
    t0 = time.perf_counter()
    for i in range(len(Xs)):
        row = Xs.iloc[[i]]
        for m in ens:
            m.predict_outcomes(row)
    naive_per_twin = (time.perf_counter() - t0) / len(Xs)
    naive_rate = n_arms * args.members / naive_per_twin

    print(f"ensemble: {args.members} T-learners x {n_arms} arms (HistGradientBoosting, 100 trees, 8 leaves); "
          f"{args.draws} noise draws per twin x therapy (not counted); median of {args.repeats}")
    print(f"{'twins':>10} {'simulations':>13} {'vectorised s':>13} {'sims/s':>12} {'sims/min':>12} "
          f"{'naive s (extrap.)':>18} {'naive sims/s':>13} {'speed-up':>9} {'peak MB':>8}")
    for n in args.sizes:
        X = tile_twins(base, n, seed=n)[cols]
        times, peak = [], 0
        for r in range(args.repeats):
            tracemalloc.start()
            t0 = time.perf_counter()
            out = simulate.simulate_treatments(ens, X, noise_sd=30.0, n_draws=args.draws, seed=r)
            times.append(time.perf_counter() - t0)
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            n_sim = out.attrs["n_simulations"]
            del out
        t = statistics.median(times)
        naive_t = naive_per_twin * n
        print(f"{n:>10,} {n_sim:>13,} {t:>13.2f} {n_sim / t:>12,.0f} {60 * n_sim / t:>12,.0f} "
              f"{naive_t:>18,.0f} {naive_rate:>13,.0f} {naive_t / t:>8,.0f}x {peak / 2**20:>8,.0f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"naive loop: {args.naive_sample} twins timed, {naive_per_twin * 1e3:.1f} ms per twin, extrapolated "
          f"linearly; process max RSS {rss:,.0f} MB")


if __name__ == "__main__":
    main()
