"""Effect-estimation quality per estimator on generated cohorts (the table an ML engineer compares in MLflow).

For each cohort size, ``effects.generator_twins`` draws patients from the synthetic generator (confounded
therapy, known potential outcomes); every estimator is fitted with ``effects.fit_estimators`` (shared
cross-fitted nuisances, 5 folds) on the twins with an observed outcome and evaluated on all twins against
the truth: PEHE per contrast (m), mean |ATE error|, policy value of "best predicted therapy" vs the oracle
and observed practice (m of 90-day 6MWD), plus the truth-free validation metric used to pick the champion
(``val_tau_risk``, lower is better) and the DR policy value. The difference in means ("naive") is the
reference row. One seed per size (fits are the cost); fit time is wall time.

    .venv/bin/python benchmarks/effect_quality.py --sizes 2000 10000 50000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from twin_pipeline.lib import effects
from twin_pipeline.lib.twin import MODEL_FEATURES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 50000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    contrasts = [a for a in effects.ARMS if a != effects.REFERENCE_ARM]
    hdr = (f"{'n':>7} {'estimator':<11} " + " ".join(f"{'PEHE ' + a[:9]:>15}" for a in contrasts)
           + f" {'|ATE err|':>9} {'PV model':>9} {'PV oracle':>9} {'PV obs.':>8} {'val_tau_risk':>12} {'DR PV':>7} {'fit s':>6}")
    print(hdr)
    for n in args.sizes:
        df, truth = effects.generator_twins(n, seed=args.seed)
        train = df[df["outcome_6mwd_90d_m"].notna()]
        t0 = time.perf_counter()
        cf, results = effects.fit_estimators(train, MODEL_FEATURES, seed=args.seed, n_folds=args.folds)
        total = time.perf_counter() - t0
        true_eff = truth[:, 1:] - truth[:, [0]]
        naive = np.array([results["t_learner"].diagnostics[f"naive_ate_{a}"] for a in contrasts])
        naive_pehe = np.sqrt(((true_eff - naive) ** 2).mean(axis=0))
        print(f"{n:>7} {'naive':<11} " + " ".join(f"{v:>15.1f}" for v in naive_pehe)
              + f" {np.abs(naive - true_eff.mean(axis=0)).mean():>9.1f}")
        for name, r in results.items():
            ev = effects.evaluate_against_truth(r.model, df, truth)
            ate_err = np.mean([abs(ev[f"ate_error_{a}"]) for a in contrasts])
            print(f"{n:>7} {name:<11} " + " ".join(f"{ev[f'pehe_{a}']:>15.1f}" for a in contrasts)
                  + f" {ate_err:>9.1f} {ev['policy_value_model']:>9.1f} {ev['policy_value_oracle']:>9.1f}"
                  f" {ev['policy_value_observed']:>8.1f} {r.diagnostics['val_tau_risk']:>12.0f}"
                  f" {r.diagnostics['dr_policy_value_model']:>7.1f} {total:>6.0f}")
        print(f"{'':>7} champion by val_tau_risk: {effects.best_estimator(results)}; "
              f"{int(cf.outside.sum())} of {len(cf.y)} training rows outside common support")


if __name__ == "__main__":
    main()
