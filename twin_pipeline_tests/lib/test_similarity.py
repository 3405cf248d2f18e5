"""Patients like me: feature space, exact vs HNSW search, filters, and the small-cell-safe summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib.similarity import build_index, small_cell_threshold, summarize_neighbours

BANDS = [f"{a}-{a + 4}" for a in range(0, 90, 5)] + ["90+"]


def make_twins(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 90, n)
    crp = np.exp(rng.normal(1.2, 0.8, n))
    crp[rng.random(n) < 0.3] = np.nan
    return pd.DataFrame({
        "person_id": [f"P{i:016x}" for i in range(n)],
        "site_id": np.array(["hospital_a", "hospital_b", "hospital_c"])[rng.integers(0, 3, n)],
        "age_years": np.floor(age), "age_band": np.array(BANDS)[np.minimum(age // 5, 18).astype(int)],
        "sex_male": (rng.random(n) < 0.5).astype(float),
        "bmi": rng.normal(27, 4, n), "crp_mg_l": crp, "fatigue_score": rng.integers(0, 11, n).astype(float),
        "joint_pattern": rng.choice([0.0, 1.0, 2.0, np.nan], n),
        "p_copd": rng.random(n),
        "therapy": rng.choice(["standard_care", "pulmonary_rehab", "colchicine", "antiviral"], n,
                              p=[0.55, 0.3, 0.12, 0.03]),
        "outcome_6mwd_90d_m": np.where(rng.random(n) < 0.8, rng.normal(450, 60, n), np.nan),
    })


def brute(index, pid: str, k: int, rows=None) -> list[str]:
    row = list(index.person_ids).index(pid)
    x = index.vectors.astype(np.float64)
    cand = np.arange(len(x)) if rows is None else rows
    d = ((x[cand] - x[row]) ** 2).sum(axis=1)
    order = cand[np.argsort(d, kind="stable")]
    return [index.person_ids[i] for i in order if i != row][:k]


def test_query_matches_brute_force_excludes_self_and_is_sorted():
    twins = make_twins(400)
    index = build_index(twins)
    assert index.method == "exact"
    res = index.query("P" + f"{7:016x}", k=20)
    assert list(res.columns) == ["person_id", "site_id", "distance"]
    assert len(res) == 20 and "P" + f"{7:016x}" not in set(res["person_id"])
    assert res["distance"].is_monotonic_increasing
    assert set(res["person_id"]) == set(brute(index, "P" + f"{7:016x}", 20))


def test_missing_values_are_imputed_and_flagged_not_ignored():
    twins = make_twins(50)
    twins.loc[0:1, "crp_mg_l"] = np.nan
    twins.loc[2, "crp_mg_l"] = twins["crp_mg_l"].mean()  # measured, exactly at the mean
    index = build_index(twins)
    names = index.space.names
    assert "missing_crp_mg_l" in names
    v = index.space.transform(twins)
    crp = names.index("crp_mg_l")
    flag = names.index("missing_crp_mg_l")
    assert v[0, crp] == 0.0 and v[0, flag] > 0 and v[2, flag] == 0.0  # imputed value, but flagged
    assert np.isfinite(v).all()


def test_filters_still_return_k_and_only_matching_twins():
    twins = make_twins(600, seed=1)
    index = build_index(twins)
    q = twins["person_id"].iat[3]
    same = index.query(q, k=15, same_site=True)
    assert len(same) == 15 and (same["site_id"] == twins["site_id"].iat[3]).all()
    bands = ["50-54", "55-59"]
    res = index.query(q, k=15, filters={"age_band": bands, "sex": "F"})
    got = twins.set_index("person_id").loc[res["person_id"]]
    assert len(res) == 15 and got["age_band"].isin(bands).all() and (got["sex_male"] == 0).all()
    rows = index._filter_rows({"age_band": bands, "sex": "F"})
    assert set(res["person_id"]) == set(brute(index, q, 15, rows))
    few = index.query(q, k=10_000, same_site=True)  # fewer matches than k: all of them, not an error
    assert len(few) == (twins["site_id"] == twins["site_id"].iat[3]).sum() - 1
    with pytest.raises(ValueError):
        index.query(q, filters={"zip3": "021"})
    with pytest.raises(KeyError):
        index.query("Pnot-a-twin")


def test_hnsw_agrees_with_exact_search_including_filtered_hnsw_path(monkeypatch):
    import twin_pipeline.lib.similarity as sim

    twins = make_twins(3000, seed=2)
    exact, hnsw = build_index(twins, method="exact"), build_index(twins, method="hnsw")
    assert hnsw.method == "hnsw"
    monkeypatch.setattr(sim, "EXACT_FILTER_MAX", 10)  # force the ID-selector HNSW path for filters
    recalls = []
    for pid in twins["person_id"].iloc[:40]:
        for kw in ({}, {"same_site": True}):
            a = exact.query(pid, k=50, **kw)
            b = hnsw.query(pid, k=50, **kw)
            assert len(b) == 50
            if kw:
                assert (b["site_id"] == a["site_id"].iat[0]).all()
            recalls.append(len(set(a["person_id"]) & set(b["person_id"])) / 50)
    assert np.mean(recalls) >= 0.95


def test_summary_never_shows_a_group_below_the_threshold():
    twins = make_twins(300, seed=3)
    index = build_index(twins)
    nb = index.query(twins["person_id"].iat[0], k=50)
    s = summarize_neighbours(nb, twins, threshold=5)
    groups = s[s["therapy"] != "total"]
    assert set(groups["therapy"]) == set(twins.set_index("person_id").loc[nb["person_id"], "therapy"])
    for r in s.itertuples():
        for col in ("n", "n_with_outcome"):
            value = getattr(r, col)
            assert value == "<5" or int(value) >= 5
        if r.n_with_outcome == "<5":
            assert np.isnan(r.outcome_mean) and np.isnan(r.outcome_median)
    assert s.loc[s["therapy"] == "total", "n"].item() == "50"
    # exactly one small group would be recoverable from the total: a second group is suppressed too
    counts = pd.Series(["a"] * 30 + ["b"] * 12 + ["c"] * 2)
    fake = pd.DataFrame({"person_id": [f"x{i}" for i in range(44)], "therapy": counts,
                         "outcome_6mwd_90d_m": 400.0})
    s2 = summarize_neighbours(fake[["person_id"]], fake, threshold=5).set_index("therapy")
    assert s2.loc["c", "n"] == "<5" and s2.loc["b", "n"] == "<5" and s2.loc["a", "n"] == "30"
    tiny = summarize_neighbours(fake[["person_id"]].head(3), fake, threshold=5)
    assert (tiny["n"] == "<5").all()


def test_small_cell_threshold_is_the_strictest_site_yaml(tmp_path):
    (tmp_path / "hospital_a.yaml").write_text("site_id: hospital_a\nsmall_cell_threshold: 3\n")
    (tmp_path / "hospital_c.yaml").write_text("site_id: hospital_c\nsmall_cell_threshold: 10\n")
    assert small_cell_threshold(tmp_path, ["hospital_a"]) == 3
    assert small_cell_threshold(tmp_path, ["hospital_a", "hospital_c"]) == 10
    assert small_cell_threshold(tmp_path, ["hospital_z"]) == 5  # no YAML: the default
