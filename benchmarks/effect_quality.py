"""Effect-estimation quality per estimator on generated cohorts (the table an ML engineer compares in MLflow).

For each cohort size, ``effects.generator_twins`` draws patients from the synthetic generator (confounded
therapy, known potential outcomes); every estimator is fitted with ``effects.fit_estimators`` (shared
cross-fitted nuisances, 5 folds) on the twins with an observed outcome and evaluated on all twins against
the truth: PEHE per contrast (m), mean |ATE error|, policy value of "best predicted therapy" vs the oracle
and observed practice (m of 90-day 6MWD), plus the truth-free validation metric used to pick the champion
(``val_tau_risk``, lower is better) and the DR policy value. The difference in means ("naive") is the
reference row. One seed per size (fits are the cost); fit time is wall time.

``--site-probe SEEDSxSITESxPATIENTS`` (issue #8) adds the per-hospital AIPW check: for each seed, a cohort
of SITES × PATIENTS generated patients is split by site and every site estimates its cross-fitted AIPW
ATE per therapy on its own rows (``effects.aipw_subgroup_effects``, subgroup ``all``, ``--site-folds``
folds as the federated site asset), with the propensity model as selected now and, side by side on the
same rows and folds, the pre-#8 specification (linear logit on normal scores, C = 1). Truth = mean true
individual effect of the site's analysed patients. Columns: mean error (m), SD and RMSE of the error,
mean SE, mean z = error / SE, share of 95 % Wald CIs covering the truth, largest |z|.

    .venv/bin/python benchmarks/effect_quality.py --sizes 2000 10000 50000
    .venv/bin/python benchmarks/effect_quality.py --sizes --site-probe 4x6x1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from twin_pipeline.lib import effects
from twin_pipeline.lib.twin import MODEL_FEATURES


def site_probe(spec: str, folds: int) -> None:
    """Per-site AIPW error vs truth, current propensity selection vs the pre-#8 one (see module doc)."""
    n_seeds, n_sites, patients = (int(x) for x in spec.lower().split("x"))
    contrasts = [a for a in effects.ARMS if a != effects.REFERENCE_ARM]
    variants = {"selected (now)": {}, "pre-#8: linear, C=1": {"propensity_spec": "linear", "propensity_c": 1.0}}
    rows, chosen = [], []
    t0 = time.perf_counter()
    for seed in range(n_seeds):
        df, truth = effects.generator_twins(n_sites * patients, seed=seed, n_sites=n_sites)
        tau = truth[:, 1:] - truth[:, [0]]
        keep = df["outcome_6mwd_90d_m"].notna().to_numpy()
        df, tau = df[keep].reset_index(drop=True), tau[keep]
        for site, idx in df.groupby("site_id").groups.items():
            g, true_ate = df.loc[idx], tau[np.asarray(idx)].mean(axis=0)
            for name, kw in variants.items():
                est, cf = effects.aipw_subgroup_effects(g, MODEL_FEATURES, seed=7, n_folds=folds, **kw)
                if not kw:
                    chosen.append(cf.propensity_spec)
                est = est[est["subgroup"] == "all"].set_index("therapy")
                for j, a in enumerate(contrasts):
                    err, se = est.loc[a, "estimate"] - true_ate[j], est.loc[a, "se"]
                    rows.append((name, a, err, se))
    wall = time.perf_counter() - t0
    print(f"\nPer-site AIPW vs truth: {n_seeds} seeds × {n_sites} sites × {patients} generated patients "
          f"({folds}-fold cross-fitting), {len(chosen)} site fits per propensity variant, {wall:.0f} s")
    print("\n| propensity model | therapy | mean error (m) | SD error | RMSE | mean SE | mean z | 95% CI coverage "
          "| max abs z |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in variants:
        for a in contrasts:
            e = np.array([r[2] for r in rows if r[0] == name and r[1] == a])
            se = np.array([r[3] for r in rows if r[0] == name and r[1] == a])
            z = e / se
            print(f"| {name} | {a} | {e.mean():+.1f} | {e.std(ddof=1):.1f} | {np.sqrt(np.mean(e ** 2)):.1f} | "
                  f"{se.mean():.1f} | {z.mean():+.2f} | {np.mean(np.abs(z) < 1.96):.2f} | {np.abs(z).max():.2f} |")
    print("\nSelected specification per site: " + ", ".join(
        f"{s} {chosen.count(s)}" for s in effects.PROPENSITY_SPECS))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[2000, 10000, 50000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--site-probe", default=None, metavar="SEEDSxSITESxPATIENTS",
                    help="also run the per-site AIPW probe, e.g. 4x6x1000")
    ap.add_argument("--site-folds", type=int, default=3, help="cross-fitting folds of the site probe")
    args = ap.parse_args()
    contrasts = [a for a in effects.ARMS if a != effects.REFERENCE_ARM]
    hdr = (f"{'n':>7} {'estimator':<11} " + " ".join(f"{'PEHE ' + a[:9]:>15}" for a in contrasts)
           + f" {'|ATE err|':>9} {'PV model':>9} {'PV oracle':>9} {'PV obs.':>8} {'val_tau_risk':>12} {'DR PV':>7} {'fit s':>6}")
    if args.sizes:
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
              f"{int(cf.outside.sum())} of {len(cf.y)} training rows outside common support; propensity "
              f"{cf.propensity_spec}, C = {cf.propensity_c:g}")
    if args.site_probe:
        site_probe(args.site_probe, args.site_folds)


if __name__ == "__main__":
    main()
