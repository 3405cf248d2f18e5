"""Enclave vs federated vs homomorphic computation across hospitals, on the same generated cohorts.

For each cohort (``--cohorts 3x2500 10x800`` = sites × average patients per site; generated once with
`twin_pipeline.synth`, 2 deliveries, waveforms shortened to ``--waveform-seconds``; the generator plants a
site-level shift of the true rehab effect, see `synth/sites.py`), the same work is done three ways:

(a) **enclave** — every site seals each delivery with age (`sources/encrypted_delivery.py`, the code behind
    `twin-pipeline encrypt-delivery`) to the enclave's recipient; the enclave decrypts into a private temp
    folder, runs the library pipeline (`lib/local_pipeline.py`: landing → deid → harmonize → interview
    scores), assembles twins (`lib/twin.build_twins`, as `twin.patient_twin` does) and fits the effect
    model on all rows: cross-fitted AIPW per therapy × subgroup (`effects.aipw_subgroup_effects`).
(b) **federated** — every site runs the same code on its own delivery only and shares its released
    subgroup estimates (AIPW estimate + SE, small cells withheld) and its obfuscated 4CE files
    (`lib/federated.py`: AgeSex, DiagProcMed, Labs, DailyCounts); the coordinator pools fixed and
    DerSimonian–Laird random effects (`lib/meta_analysis.pool_table`).
(c) **homomorphic** — every site encrypts its *unobfuscated* AgeSex and DiagProcMed count vectors with
    Paillier (`lib/homomorphic.py`, ``--bits``); the coordinator sums ciphertexts, only the total is
    decrypted; compared with plaintext summation of the same vectors and with what pooling the
    obfuscated files can say (exact cells).

Wall times are measured here one site after the other on one machine; "critical path" is what the mode
would take with the sites working in parallel (slowest site + central/coordinator part). Bytes leaving a
site: the encrypted archives (enclave), the 4CE CSVs + estimate CSV (federated), the ciphertext JSON
(homomorphic). Truth per therapy × subgroup = mean true individual effect (generator truth dir,
``tau_<arm>`` = potential outcome under the arm minus under standard care, metres) over the analysed
patients (twins with a therapy and an observed 90-day outcome); subgroups are `effects.EFFECT_SUBGROUPS`
on the twin's own features. CIs are 95 % Wald intervals. Run:

    .venv/bin/python benchmarks/federated_modes.py                          # 3×2500 and 10×800
    .venv/bin/python benchmarks/federated_modes.py --cohorts 3x300 --bits 1024   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.lib import deid as deid_lib
from twin_pipeline.lib import effects
from twin_pipeline.lib import federated as fed
from twin_pipeline.lib import homomorphic as he
from twin_pipeline.lib.local_pipeline import truth_by_pseudonym, twin_inputs_from_landing
from twin_pipeline.lib.meta_analysis import pool_table, wald_ci
from twin_pipeline.lib.twin import MODEL_FEATURES, TwinInputs, build_twins
from twin_pipeline.sources.encrypted_delivery import decrypt_delivery, encrypt_delivery, generate_identity
from twin_pipeline.sources.landing import find_deliveries, load_site_config
from twin_pipeline.synth.generator import generate_cohort
from twin_pipeline.synth.sites import site_profiles

SECRET = "benchmark-secret-0123456789abcdef"
CONTRASTS = [a for a in effects.ARMS if a != effects.REFERENCE_ARM]
LAB_LOINCS = ["1988-5", "2345-7", "2160-0", "4548-4", "59408-5", "64098-7"]  # as defs/federated/assets.py
FOUR_CE_FILES = ("AgeSex", "DiagProcMed", "Labs", "DailyCounts")
HE_VECTORS = {  # 4CE file -> (cell keys, count columns) encrypted per site
    "AgeSex": (["age_group", "sex"], fed.COUNT_COLUMNS["AgeSex"]),
    "DiagProcMed": (["concept_type", "concept_code"], fed.COUNT_COLUMNS["DiagProcMed"]),
}
BUILT_AT = pd.Timestamp("2027-01-01")


# ----------------------------------------------------------------------------------------- helpers
def _twins(inputs: TwinInputs) -> pd.DataFrame:
    return build_twins(inputs, twin_version="benchmark", built_at=BUILT_AT)


def _analysed(twins: pd.DataFrame) -> pd.DataFrame:
    return twins[twins["therapy"].notna() & twins["outcome_6mwd_90d_m"].notna()].reset_index(drop=True)


def _site_view(landing: Path, site: str, view_root: Path) -> Path:
    """A landing root that holds only `site` (a symlink), so the site's run sees nothing else."""
    view = view_root / site
    view.mkdir(parents=True, exist_ok=True)
    link = view / site
    if not link.exists():
        link.symlink_to((landing / site).resolve(), target_is_directory=True)
    return view


def _four_ce_raw(site: str, inputs: TwinInputs) -> dict[str, pd.DataFrame]:
    index = fed.cohort_index(inputs.condition)
    return {
        "AgeSex": fed.site_age_sex(site, inputs.person, index, inputs.procedure),
        "DiagProcMed": fed.site_diag_proc_med(site, index, inputs.condition, inputs.drug, inputs.procedure),
        "Labs": fed.site_labs(site, index, inputs.measurement, inputs.procedure, LAB_LOINCS),
        "DailyCounts": fed.site_daily_counts(site, index, inputs.person),
    }


def _ci(est: float, se: float) -> str:
    if not np.isfinite(est):
        return "—"
    lo, hi = wald_ci(est, se)
    return f"{est:.1f} [{lo:.1f}, {hi:.1f}]"


def _med_max(values: list[float]) -> tuple[float, float]:
    return float(statistics.median(values)), float(max(values))


# ------------------------------------------------------------------------------------------- modes
def run_enclave(root: Path, key: deid_lib.DeidKey, sites: list[str], args) -> dict:
    """Sites seal deliveries; the enclave decrypts, runs the pipeline and fits on all rows."""
    identity, recipient = generate_identity()
    sealed = root / "enclave_inbox"
    shutil.rmtree(sealed, ignore_errors=True)
    site_s, site_bytes = {}, {}
    for site in sites:
        t = time.perf_counter()
        n = 0
        for d in find_deliveries(root / "landing"):
            if d.site_id == site:
                n += encrypt_delivery(d.path, sealed / site / d.delivery_id, recipient).stat().st_size
        site_s[site], site_bytes[site] = time.perf_counter() - t, n
    t = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="enclave-", dir=root))
    try:
        plain = work / "landing"
        for d in find_deliveries(sealed):
            out = decrypt_delivery(d.path, identity, work_root=work)
            target = plain / d.site_id / d.delivery_id
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(out, target)
            (target / "_READY").touch()
        t_dec = time.perf_counter() - t
        twins = _twins(twin_inputs_from_landing(plain, root / "sites", key, work / "quarantine"))
        t_pipe = time.perf_counter() - t - t_dec
        train = _analysed(twins)
        est, _ = effects.aipw_subgroup_effects(train, MODEL_FEATURES, seed=args.seed, n_folds=args.folds)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # no plaintext left behind
    central_s = time.perf_counter() - t
    return {"site_s": site_s, "site_bytes": site_bytes, "central_s": central_s, "decrypt_s": t_dec,
            "pipeline_s": t_pipe, "estimates": est, "train": train}


def run_federated(root: Path, key: deid_lib.DeidKey, sites: list[str], args) -> dict:
    """Each site runs the pipeline on its own data, shares estimates + obfuscated 4CE files; pool."""
    outbox = root / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    site_s, site_bytes, raw_counts, thresholds, withheld, n_train = {}, {}, {}, {}, {}, {}
    possible = len(effects.EFFECT_SUBGROUPS) * len(CONTRASTS)
    for site in sites:
        t = time.perf_counter()
        threshold = int(load_site_config(root / "sites", site).small_cell_threshold)
        thresholds[site] = threshold
        view = _site_view(root / "landing", site, root / "site_views")
        inputs = twin_inputs_from_landing(view, root / "sites", key, root / "quarantine_fed")
        train = _analysed(_twins(inputs))
        n_train[site] = len(train)
        per_arm = train["therapy"].value_counts()
        if all(per_arm.get(a, 0) >= effects.MIN_ROWS_PER_ARM for a in effects.ARMS):
            est, _ = effects.aipw_subgroup_effects(train, MODEL_FEATURES, small_cell_threshold=threshold,
                                                   seed=args.seed, n_folds=args.folds)
        else:
            est = pd.DataFrame(columns=effects.SUBGROUP_EFFECT_COLUMNS)
        est = est.assign(siteid=site)[["siteid", "therapy", "subgroup", "n", "estimate", "se"]]
        withheld[site] = possible - len(est)
        (outbox / site).mkdir(parents=True, exist_ok=True)
        est.to_csv(outbox / site / "EffectEstimates.csv", index=False)
        raw = _four_ce_raw(site, inputs)
        for file in FOUR_CE_FILES:
            fed.obfuscate(raw[file], file, threshold).to_csv(outbox / site / f"{file}.csv", index=False)
        site_s[site] = time.perf_counter() - t
        site_bytes[site] = sum(p.stat().st_size for p in (outbox / site).glob("*.csv"))
        raw_counts[site] = {f: raw[f] for f in HE_VECTORS}  # unobfuscated: stays at the site (HE input)
    t = time.perf_counter()  # coordinator: reads only the outbox
    site_rows = pd.concat([pd.read_csv(outbox / s / "EffectEstimates.csv") for s in sites], ignore_index=True)
    pooled = pool_table(site_rows, ["therapy", "subgroup"])
    coord_s = time.perf_counter() - t
    return {"site_s": site_s, "site_bytes": site_bytes, "coord_s": coord_s, "site_rows": site_rows,
            "pooled": pooled, "raw_counts": raw_counts, "thresholds": thresholds, "withheld": withheld,
            "outbox": outbox, "n_train": n_train}


def run_homomorphic(fedres: dict, sites: list[str], args) -> list[dict]:
    """Paillier vs plaintext aggregation of the sites' unobfuscated AgeSex / DiagProcMed counts."""
    t = time.perf_counter()
    pk, sk = he.generate_keypair(args.bits)
    keygen_s = time.perf_counter() - t
    out = []
    for file, (keys, cols) in HE_VECTORS.items():
        frames = {s: fedres["raw_counts"][s][file] for s in sites}
        cells = sorted({tuple(r) for f in frames.values() for r in f[keys].itertuples(index=False)})
        # per site: one vector of cells × count columns, row-major (agreed cell list)
        vecs = {s: np.column_stack([he.align_counts(frames[s], keys, c, cells) for c in cols]).ravel()
                for s in sites}
        t = time.perf_counter()
        plain_total = np.sum([vecs[s] for s in sites], axis=0)
        plain_s = time.perf_counter() - t
        plain_bytes = [len(",".join(str(int(x)) for x in vecs[s]).encode()) for s in sites]
        enc, enc_s, enc_bytes = {}, [], []
        for s in sites:
            t = time.perf_counter()
            enc[s] = he.encrypt_counts(pk, vecs[s])
            enc_s.append(time.perf_counter() - t)
            enc_bytes.append(len(json.dumps([[str(c.ciphertext()), c.exponent] for c in enc[s]]).encode()))
        t = time.perf_counter()
        total = he.sum_encrypted([enc[s] for s in sites])
        sum_s = time.perf_counter() - t
        t = time.perf_counter()
        dec = he.decrypt_total(sk, total)
        dec_s = time.perf_counter() - t
        # what the obfuscated, released files allow: cells whose cross-site total is known exactly
        released = [pd.read_csv(fedres["outbox"] / s / f"{file}.csv", dtype={k: str for k in keys}) for s in sites]
        pooled = fed.pool_counts(released, keys, cols, fedres["thresholds"])
        exact_cells = 0
        if len(pooled):
            lookup = pooled.set_index(keys)
            truth = pd.DataFrame(plain_total.reshape(len(cells), len(cols)), columns=cols,
                                 index=pd.MultiIndex.from_tuples(cells, names=keys))
            for cell, row in truth.iterrows():
                if cell in lookup.index:
                    r = lookup.loc[cell]
                    exact_cells += sum(int(r[f"{c}_masked_max"] == 0 and r[c] == row[c]) for c in cols)
        out.append({"file": file, "values": len(cells) * len(cols), "keygen_s": keygen_s, "plain_ms": plain_s * 1e3,
                    "enc_s": enc_s, "sum_s": sum_s, "dec_s": dec_s, "plain_bytes": plain_bytes,
                    "enc_bytes": enc_bytes, "exact": bool((dec == plain_total).all()),
                    "obfuscated_exact": exact_cells})
    return out


# ------------------------------------------------------------------------------------------ report
def _truth_table(train: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    sub_cols = sorted({rule[0] for rule in effects.EFFECT_SUBGROUPS.values() if rule})
    m = train[["site_id", "person_id", "therapy", *sub_cols]].merge(
        truth[["site_id", "person_id", *[f"tau_{a}" for a in CONTRASTS]]], on=["site_id", "person_id"],
        how="left", validate="one_to_one")
    if m[[f"tau_{a}" for a in CONTRASTS]].isna().any().any():
        raise ValueError("some analysed twins have no ground-truth row (pseudonym mismatch)")
    masks = effects.subgroup_masks(m)
    rows = []
    for sg, mask in masks.items():
        for a in CONTRASTS:
            rows.append({"therapy": a, "subgroup": sg, "truth": float(m.loc[mask, f"tau_{a}"].mean()),
                         "n_patients": int(mask.sum())})
    return pd.DataFrame(rows), m


def report(name: str, sites: list[str], gen_s: float, enc: dict, fd: dict, hres: list[dict],
           truth: pd.DataFrame, truth_dir: Path) -> None:
    n_an = len(enc["train"])
    print(f"\n## {name}: {len(sites)} sites, {n_an} analysed twins (therapy + observed 90-day outcome); "
          f"generated in {gen_s:.0f} s\n")
    # --- cost per mode
    e_med, e_max = _med_max(list(enc["site_bytes"].values()))
    f_med, f_max = _med_max(list(fd["site_bytes"].values()))
    h_bytes = [sum(r["enc_bytes"][i] for r in hres) for i in range(len(sites))]
    h_med, h_max = _med_max(h_bytes)
    e_seq = sum(enc["site_s"].values()) + enc["central_s"]
    e_crit = max(enc["site_s"].values()) + enc["central_s"]
    f_seq = sum(fd["site_s"].values()) + fd["coord_s"]
    f_crit = max(fd["site_s"].values()) + fd["coord_s"]
    h_site = [sum(r["enc_s"][i] for r in hres) for i in range(len(sites))]
    h_central = sum(r["sum_s"] + r["dec_s"] for r in hres) + hres[0]["keygen_s"]
    print("| mode | what leaves a site | wall s (sequential) | critical path s | per-site s median / max | "
          "central s | bytes/site median | bytes/site max |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    es = list(enc["site_s"].values())
    print(f"| enclave | age-encrypted delivery archives (all rows) | {e_seq:.1f} | {e_crit:.1f} | "
          f"{statistics.median(es):.1f} / {max(es):.1f} (encrypt) | {enc['central_s']:.1f} (decrypt "
          f"{enc['decrypt_s']:.1f}, pipeline+twins {enc['pipeline_s']:.1f}, fit) | {e_med:,.0f} | {e_max:,.0f} |")
    fs = list(fd["site_s"].values())
    print(f"| federated | 4CE CSVs (obfuscated) + subgroup estimates CSV | {f_seq:.1f} | {f_crit:.1f} | "
          f"{statistics.median(fs):.1f} / {max(fs):.1f} (pipeline+twins+fit+4CE) | {fd['coord_s']:.2f} (pool) | "
          f"{f_med:,.0f} | {f_max:,.0f} |")
    print(f"| homomorphic (aggregation only) | Paillier ciphertexts of AgeSex + DiagProcMed counts | "
          f"{sum(h_site) + h_central:.1f} | {max(h_site) + h_central:.1f} | {statistics.median(h_site):.1f} / "
          f"{max(h_site):.1f} (encrypt) | {h_central:.1f} (keygen+sum+decrypt) | {h_med:,.0f} | {h_max:,.0f} |")
    print("\nHomomorphic rows exclude the local pipeline that produces the counts (the same as federated). "
          f"Analysed twins: enclave {n_an}, federated (sum over sites) {sum(fd['n_train'].values())}.")
    # --- estimates
    pooled = fd["pooled"].set_index(["therapy", "subgroup"])
    central = enc["estimates"].set_index(["therapy", "subgroup"])
    print("\n| therapy | subgroup | patients | truth (m) | enclave AIPW [95% CI] | federated FE [95% CI] | "
          "federated RE [95% CI] | sites pooled | Q p | I² | τ² (m²) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in truth.itertuples():
        k = (r.therapy, r.subgroup)
        c = central.loc[k] if k in central.index else None
        p = pooled.loc[k] if k in pooled.index else None
        cen = _ci(c["estimate"], c["se"]) if c is not None else "withheld"
        if p is not None:
            fe, re_ = _ci(p["fixed"], p["fixed_se"]), _ci(p["random"], p["random_se"])
            het = f"{int(p['n_sites'])} | {p['q_pvalue']:.3g} | {p['i2']:.2f} | {p['tau2']:.0f}"
        else:
            fe = re_ = "—"
            het = "0 | — | — | —"
        print(f"| {r.therapy} | {r.subgroup} | {r.n_patients} | {r.truth:.1f} | {cen} | {fe} | {re_} | {het} |")
    withheld = sum(fd["withheld"].values())
    print(f"\nSite rows withheld (subgroup arm count below max(site threshold, {effects.MIN_ROWS_PER_ARM})): "
          f"{withheld} of {len(sites) * len(effects.EFFECT_SUBGROUPS) * len(CONTRASTS)}.")
    # --- planted heterogeneity per site
    shifts = {s: json.loads((truth_dir / s / "site_profile.json").read_text()).get("effect_shift_m", {})
              for s in sites}
    rows = fd["site_rows"]
    print("\n| site | planted rehab shift (m) | true rehab ATE (m) | site AIPW rehab ± SE | true colchicine ATE | "
          "site AIPW colchicine ± SE | true antiviral ATE | site AIPW antiviral ± SE |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    merged = enc["merged"]
    for s in sites:
        cells = [f"{shifts[s].get('pulmonary_rehab', 0.0):+.0f}"]
        for a in CONTRASTS:
            tru = merged.loc[merged["site_id"] == s, f"tau_{a}"].mean()
            e = rows[(rows["siteid"] == s) & (rows["therapy"] == a) & (rows["subgroup"] == "all")]
            cells += [f"{tru:.1f}", f"{e['estimate'].iloc[0]:.1f} ± {e['se'].iloc[0]:.1f}" if len(e) else "withheld"]
        print(f"| {s} | " + " | ".join(cells) + " |")
    # --- HE vs plaintext
    print("\n| vector | values/site | plaintext sum ms | HE encrypt s/site median / max | HE sum s | HE decrypt s | "
          "bytes/site plaintext (median) | bytes/site ciphertext (median) | HE total = plaintext total | "
          "values exact from obfuscated files |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in hres:
        print(f"| {r['file']} | {r['values']} | {r['plain_ms']:.3f} | {statistics.median(r['enc_s']):.2f} / "
              f"{max(r['enc_s']):.2f} | {r['sum_s']:.3f} | {r['dec_s']:.2f} | {statistics.median(r['plain_bytes']):,.0f} | "
              f"{statistics.median(r['enc_bytes']):,.0f} | {r['exact']} | {r['obfuscated_exact']} of {r['values']} |")
    print("\nLast column: cell × count values whose cross-site total the released (obfuscated) 4CE files pin down "
          "exactly (no site masked or dropped that cell); the homomorphic total is exact for all of them.")


def run_cohort(spec: str, args, work: Path) -> None:
    n_sites, patients = (int(x) for x in spec.lower().split("x"))
    root = work / f"cohort_{n_sites}x{patients}_seed{args.seed}"
    t = time.perf_counter()
    if not (root / "landing").exists():
        generate_cohort(root / "landing", sites=n_sites, patients=patients, seed=args.seed,
                        truth_dir=root / "truth", sites_dir=root / "sites", deliveries=2,
                        waveform_seconds={k: args.waveform_seconds for k in ("ecg_monitor", "ventilator", "wearable")})
    gen_s = time.perf_counter() - t
    sites = [p.site_id for p in site_profiles(n_sites)]
    key = deid_lib.DeidKey.from_secret(SECRET, max_shift_days=120)
    enc = run_enclave(root, key, sites, args)
    fd = run_federated(root, key, sites, args)
    hres = run_homomorphic(fd, sites, args)
    truth_tab, merged = _truth_table(enc["train"], truth_by_pseudonym(root / "truth", key))
    enc["merged"] = merged
    report(f"{n_sites} sites × {patients} patients (average), seed {args.seed}", sites, gen_s, enc, fd, hres,
           truth_tab, root / "truth")
    # heterogeneity summary of the planted vs unplanted arms (subgroup "all")
    p = fd["pooled"]
    allp = p[p["subgroup"] == "all"].set_index("therapy")
    print("\nHeterogeneity (subgroup all): " + "; ".join(
        f"{a}: Q p = {allp.loc[a, 'q_pvalue']:.2g}, I² = {allp.loc[a, 'i2']:.2f}" for a in CONTRASTS if a in allp.index)
        + " (planted: pulmonary_rehab)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohorts", nargs="+", default=["3x2500", "10x800"],
                    help="cohorts as SITESxPATIENTS (average patients per site)")
    ap.add_argument("--seed", type=int, default=2026, help="generator seed")
    ap.add_argument("--folds", type=int, default=3, help="cross-fitting folds (the site asset's default)")
    ap.add_argument("--bits", type=int, default=2048, help="Paillier modulus bits")
    ap.add_argument("--waveform-seconds", type=float, default=2.0, help="length of every generated waveform")
    ap.add_argument("--work", default=None, help="folder for generated cohorts (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="federated-modes-")
        work = Path(tmp)
    try:
        print(f"# Federated modes: enclave vs federated vs homomorphic (Paillier {args.bits}-bit), "
              f"{args.folds}-fold cross-fitted AIPW, seed {args.seed}")
        for spec in args.cohorts:
            run_cohort(spec, args, work)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal benchmark wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
