"""4CE-style obfuscation, pooling and cross-site QC."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_pipeline.lib import federated as fed


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=30),
    threshold=st.integers(0, 11),
)
def test_obfuscated_files_never_release_a_small_cell(counts, threshold):
    df = pd.DataFrame(
        {"siteid": "s", "cohort": "c", "age_group": [f"g{i}" for i in range(len(counts))], "sex": "all",
         "pts_all": [a for a, _ in counts], "pts_ever_severe": [b for _, b in counts],
         "mean_age": np.linspace(20, 80, len(counts))}
    )
    out = fed.obfuscate(df, "AgeSex", threshold)
    assert fed.small_cells(out, "AgeSex", threshold) == 0
    if threshold > 1:
        for c in ("pts_all", "pts_ever_severe"):
            released = out[c][out[c] != fed.MASK]
            assert ((released == 0) | (released >= threshold)).all()
        # every row kept carries at least one count at or above the threshold; means of masked groups are masked
        assert ((out[["pts_all", "pts_ever_severe"]] >= threshold).any(axis=1)).all()
        assert (out.loc[out["pts_all"] == fed.MASK, "mean_age"] == fed.MASK).all()
        kept = len(out)
        assert kept == int(((df[["pts_all", "pts_ever_severe"]] >= threshold).any(axis=1)).sum())
    else:
        assert out[["pts_all", "pts_ever_severe"]].equals(df[["pts_all", "pts_ever_severe"]])


def test_pooling_sums_released_counts_and_bounds_the_masked_ones():
    a = pd.DataFrame({"siteid": "a", "cohort": "c", "k": ["x", "y"], "n": [12, fed.MASK]})
    b = pd.DataFrame({"siteid": "b", "cohort": "c", "k": ["x", "y"], "n": [fed.MASK, 7]})
    pooled = fed.pool_counts([a, b], ["cohort", "k"], ["n"], {"a": 5, "b": 10}).set_index("k")
    assert pooled.loc["x", "n"] == 12 and pooled.loc["x", "n_masked_max"] == 9
    assert pooled.loc["y", "n"] == 7 and pooled.loc["y", "n_masked_max"] == 4 and pooled.loc["y", "n_sites"] == 2


def test_cross_site_qc_flags_a_unit_error_and_inconsistent_counts():
    labs = pd.DataFrame({
        "siteid": ["a", "b", "c", "a", "b", "c"], "loinc": ["2345-7"] * 3 + ["1988-5"] * 3,
        "mean_value_all": [110.0, 6.1, 105.0, 8.0, 9.0, 7.5], "pts_all": [20] * 6,
        "pts_ever_severe": [0] * 6, "pts_never_severe": [20] * 6,
    })
    age_sex = pd.DataFrame({
        "siteid": ["a", "a", "b", "b"], "age_group": ["all", "26to49", "all", "26to49"], "sex": "all",
        "pts_all": [30, 12, 10, 14], "pts_ever_severe": [0, 0, -5, 0],
    })
    qc = fed.cross_site_qc(age_sex, labs)
    assert qc["lab_unit_suspect"] == ["b:2345-7"]  # glucose in mmol/L at site b
    assert qc["subgroup_exceeds_total"] == ["b"]
    assert qc["negative_counts"] == ["b:AgeSex.pts_ever_severe"]


def test_age_groups_follow_4ce_bins():
    groups = fed.age_group(pd.Series([2.0, 20.9, 21.0, 49.5, 50.0, 79.9, 80.0, 90.0, np.nan]))
    assert list(groups) == ["00to02", "18to20", "21to25", "26to49", "50to69", "70to79", "80plus", "80plus", "other"]
