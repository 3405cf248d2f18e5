""""Patients like me" at scale: build time, memory, query latency and recall@50, side by side.

Synthetic twins (the twin columns `lib/similarity.py` uses, with realistic missingness: labs measured
for 10-90 % of twins, waveforms for a minority) at 10k / 100k / 1M. The same feature matrix is
searched by:

* brute-force NumPy (exact),
* scikit-learn `NearestNeighbors` (exact; algorithm="auto"),
* faiss `IndexFlatL2` (exact; filters via an ID-selector bitmap),
* `lib.similarity` with faiss HNSW (approximate; M=32, efConstruction=80, efSearch swept), whose
  filtered queries take the library's own path (exact over the subset when it is small, HNSW with
  an ID selector otherwise, exact fallback when the walk comes back short).

Queries are single twins (interactive use), k=50, the query twin excluded; "site+age" = same site
and same 5-year age band; "site" = same site only. Latencies are per query over `--queries`
random twins after one warm-up; recall@50 is against NumPy exact with the same filter. faiss uses one
thread while querying (both cores while building). Run:

    .venv/bin/python benchmarks/similarity_scale.py                       # 10k, 100k, 1M
    .venv/bin/python benchmarks/similarity_scale.py --sizes 10000 --queries 50
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np
import pandas as pd

from twin_pipeline.lib.similarity import build_index

N_SITES = 3
AGE_BANDS = [f"{a}-{a + 4}" for a in range(0, 90, 5)] + ["90+"]


def synthetic_twins(n: int, seed: int = 0) -> pd.DataFrame:
    """n synthetic twins with correlated features and honest missingness (no real patient data)."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(56, 15, n), 18, 95)
    female = rng.random(n) < 0.55
    severity = rng.normal(0, 1, n)
    bmi = np.clip(rng.normal(27.5, 5, n), 16, 55)
    copd = rng.random(n) < 1 / (1 + np.exp(-(-3.5 + 0.05 * (age - 55))))
    asthma = ~copd & (rng.random(n) < 0.1)
    ra = rng.random(n) < 0.06
    oa = ~ra & (rng.random(n) < 1 / (1 + np.exp(-(-2.6 + 0.07 * (age - 50)))))
    t2d = rng.random(n) < 1 / (1 + np.exp(-(-3 + 0.04 * (age - 50) + 0.15 * (bmi - 27))))
    t1d = ~t2d & (rng.random(n) < 0.03)

    def maybe(x: np.ndarray, p: float | np.ndarray) -> np.ndarray:
        return np.where(rng.random(n) < p, x, np.nan)

    band_idx = np.minimum(age // 5, 18).astype(int)
    df = pd.DataFrame({
        "person_id": [f"P{i:016x}" for i in range(n)],
        "site_id": np.array([f"hospital_{chr(97 + i)}" for i in range(N_SITES)])[rng.integers(0, N_SITES, n)],
        "age_years": np.floor(age), "age_band": np.array(AGE_BANDS)[band_idx],
        "sex_male": (~female).astype(float), "bmi": bmi,
        "crp_mg_l": maybe(np.exp(1.1 + 0.45 * severity + 1.3 * ra + rng.normal(0, 0.7, n)), 0.95),
        "hba1c_pct": maybe(np.where(t1d | t2d, rng.normal(7.9, 0.9, n), rng.normal(5.4, 0.3, n)),
                           np.where(t1d | t2d, 0.98, 0.3)),
        "fev1_fvc_pct": maybe(np.where(copd, rng.normal(58, 7, n), rng.normal(78, 6, n)),
                              np.where(copd | asthma, 0.95, 0.15)),
        "spo2_pct": np.clip(rng.normal(97 - 3 * copd, 1.2, n), 80, 100),
        "sbp_mmhg": rng.normal(125 + 0.4 * (age - 50), 12, n),
        "creatinine_mg_dl": np.clip(rng.normal(0.9 + 0.004 * (age - 50), 0.15, n), 0.4, 3),
        "baseline_6mwd_m": maybe(np.clip(560 - 3 * (age - 50) - 12 * severity - 55 * copd + rng.normal(0, 40, n),
                                         60, 750), 0.97),
        "days_since_covid": np.round(60 + rng.exponential(150, n)),
        "fatigue_score": maybe(np.clip(np.round(5 + 1.7 * severity + rng.normal(0, 1, n)), 0, 10), 0.96),
        "dyspnea_mmrc": maybe(np.clip(np.round(1.2 + 0.75 * severity + 0.9 * copd), 0, 4), 0.96),
        "post_exertional_malaise": maybe((rng.random(n) < 0.5).astype(float), 0.96),
        "cognitive_complaints": maybe((rng.random(n) < 0.45).astype(float), 0.96),
        "hr_mean_bpm": maybe(rng.normal(76 + 4 * severity, 9, n), 0.6),
        "hrv_rmssd_ms": maybe(np.exp(rng.normal(3.4, 0.5, n)), 0.6),
        "resting_hr_bpm": maybe(rng.normal(72 + 4 * severity, 8, n), 0.3),
        "joint_pattern": maybe(np.where(ra, 1.0, np.where(oa, 2.0, 0.0)), 0.96),
        "p_rheumatoid_arthritis": np.where(ra, rng.uniform(0.8, 1, n), rng.uniform(0, 0.05, n)),
        "p_osteoarthritis": np.where(oa, rng.uniform(0.8, 1, n), rng.uniform(0, 0.05, n)),
        "p_type1_diabetes": np.where(t1d, rng.uniform(0.8, 1, n), rng.uniform(0, 0.05, n)),
        "p_type2_diabetes": np.where(t2d, rng.uniform(0.8, 1, n), rng.uniform(0, 0.05, n)),
        "p_asthma": np.where(asthma, rng.uniform(0.8, 1, n), rng.uniform(0, 0.05, n)),
        "p_copd": np.where(copd, rng.uniform(0.8, 1, n), rng.uniform(0, 0.05, n)),
    })
    return df


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def numpy_knn(x: np.ndarray, norms: np.ndarray, q_row: int, k: int, rows: np.ndarray | None) -> np.ndarray:
    sub = x if rows is None else x[rows]
    sn = norms if rows is None else norms[rows]
    q = x[q_row]
    d2 = sn - 2.0 * (sub @ q)
    kk = min(k + 1, len(d2))
    part = np.argpartition(d2, kk - 1)[:kk]
    ids = part[np.argsort(d2[part])]
    ids = ids if rows is None else rows[ids]
    return ids[ids != q_row][:k]


def main(argv: list[str] | None = None) -> int:
    import faiss
    from sklearn.neighbors import NearestNeighbors

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--sklearn-max", type=int, default=1_000_000, help="skip scikit-learn above this size")
    args = ap.parse_args(argv)
    k = args.k
    rows_out = []
    build_threads = faiss.omp_get_max_threads()
    for n in args.sizes:
        twins = synthetic_twins(n, seed=n)
        rng = np.random.default_rng(1)
        qrows = rng.choice(n, size=min(args.queries, n), replace=False)
        gc.collect()
        m0 = rss_mb()
        t = time.perf_counter()
        exact = build_index(twins, method="exact")
        t_exact = time.perf_counter() - t
        m_exact = rss_mb() - m0
        x = exact.vectors
        d = x.shape[1]
        norms = np.einsum("ij,ij->i", x, x)
        filt = {
            "none": lambda r: None,
            "site+age": lambda r: {"site_id": exact.site_ids[r], "age_band": exact.age_bands[r]},
            "site": lambda r: {"site_id": exact.site_ids[r]},
        }
        truth: dict[tuple[str, int], np.ndarray] = {}

        def timed(fn, label_rows):
            fn(qrows[0])  # warm-up
            lat, res = [], {}
            for r in label_rows:
                t0 = time.perf_counter()
                res[r] = fn(r)
                lat.append((time.perf_counter() - t0) * 1000)
            return np.percentile(lat, 50), np.percentile(lat, 95), res

        def record(method, fname, build_s, mem, p50, p95, res):
            rec = np.mean([len(np.intersect1d(res[r], truth[(fname, r)])) / max(len(truth[(fname, r)]), 1)
                           for r in qrows])
            short = int(sum(len(res[r]) < min(k, len(truth[(fname, r)])) for r in qrows))
            rows_out.append({"n": n, "method": method, "filter": fname, "build_s": build_s, "mem_mb": mem,
                             "p50_ms": p50, "p95_ms": p95, "recall": rec, "short_results": short})
            print(f"  n={n:>9,} {method:<28} {fname:<9} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  recall {rec:.3f}",
                  flush=True)

        faiss.omp_set_num_threads(1)
        for fname, f in filt.items():
            def np_query(r, f=f):
                rows = exact._filter_rows(f(r))
                return numpy_knn(x, norms, r, k, rows)
            p50, p95, res = timed(np_query, qrows)
            for r in qrows:
                truth[(fname, r)] = res[r]
            record("numpy brute force", fname, 0.0, x.nbytes / 2**20, p50, p95, res)

        if n <= args.sklearn_max:
            gc.collect()
            m0 = rss_mb()
            t = time.perf_counter()
            nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
            t_sk = time.perf_counter() - t
            m_sk = rss_mb() - m0
            for fname, f in filt.items():
                if fname == "none":
                    def sk_query(r):
                        ids = nn.kneighbors(x[r:r + 1], k + 1, return_distance=False)[0]
                        return ids[ids != r][:k]
                else:  # sklearn has no filtered search: fit on the subset per query (what a user would do)
                    def sk_query(r, f=f):
                        rows = exact._filter_rows(f(r))
                        sub = NearestNeighbors(n_neighbors=min(k + 1, len(rows))).fit(x[rows])
                        ids = rows[sub.kneighbors(x[r:r + 1], return_distance=False)[0]]
                        return ids[ids != r][:k]
                p50, p95, res = timed(sk_query, qrows if fname == "none" else qrows[:20])
                if fname != "none":
                    res = {r: res.get(r, truth[(fname, r)]) for r in qrows}  # recall over the timed subset
                record("scikit-learn NearestNeighbors", fname, t_sk, m_sk, p50, p95, res)
            del nn

        for fname, f in filt.items():
            def fx_query(r, f=f):
                ids, _ = exact.search_vector(x[r], k, rows=None, exclude=r) if f(r) is None else \
                    _flat_filtered(faiss, exact, x[r], k, exact._filter_rows(f(r)), r)
                return ids
            p50, p95, res = timed(fx_query, qrows)
            record("faiss IndexFlatL2 (exact)", fname, t_exact, m_exact, p50, p95, res)
        del exact.index

        faiss.omp_set_num_threads(build_threads)
        gc.collect()
        m0 = rss_mb()
        t = time.perf_counter()
        hnsw = build_index(twins, method="hnsw")
        t_hnsw = time.perf_counter() - t
        m_hnsw = rss_mb() - m0
        faiss.omp_set_num_threads(1)
        for ef in args.ef:
            hnsw.ef_search = ef
            for fname, f in filt.items():
                p50, p95, res = timed(lambda r, f=f: _ids(hnsw, r, k, f(r)), qrows)
                record(f"faiss HNSW M=32 ef={ef}", fname, t_hnsw, m_hnsw, p50, p95, res)
        del hnsw, exact, twins
        gc.collect()

    df = pd.DataFrame(rows_out)
    print(f"\nfeature dimension d={d}, k={k}, {args.queries} single-twin queries per cell, "
          f"faiss build threads={build_threads}, query threads=1\n")
    print("| twins | method | filter | build s | index MB | p50 ms | p95 ms | recall@50 |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for r in df.itertuples():
        print(f"| {r.n:,} | {r.method} | {r.filter} | {r.build_s:.1f} | {r.mem_mb:.0f} | {r.p50_ms:.2f} | "
              f"{r.p95_ms:.2f} | {r.recall:.3f} |")
    return 0


def _ids(index, r: int, k: int, f) -> np.ndarray:
    rows = index._filter_rows(f)
    ids, _ = index.search_vector(index.vectors[r], k, rows=rows, exclude=r)
    return ids


def _flat_filtered(faiss, exact, q, k, rows, exclude):
    bitmap = exact._bitmap(rows)
    sel = faiss.IDSelectorBitmap(len(exact), faiss.swig_ptr(bitmap))
    d2, ids = exact.index.search(q.reshape(1, -1), k + 1, params=faiss.SearchParameters(sel=sel))
    ids = ids[0]
    return ids[(ids >= 0) & (ids != exclude)][:k], d2


if __name__ == "__main__":
    sys.exit(main())
