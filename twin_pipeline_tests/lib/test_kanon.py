"""k-anonymity report over quasi-identifiers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib.kanon import TWIN_QUASI_IDENTIFIERS, k_anonymity, twin_quasi_identifiers


def test_classes_smallest_and_records_below_k():
    df = pd.DataFrame({"a": ["x"] * 6 + ["y"] * 3 + ["z"], "b": [1] * 10})
    rep = k_anonymity(df, ["a", "b"], k=5)
    assert (rep.records, rep.classes, rep.smallest_class) == (10, 3, 1)
    assert (rep.classes_below_k, rep.records_below_k) == (2, 4)
    assert rep.share_below_k == pytest.approx(0.4)
    assert rep.size_histogram == {"1": 1, "3": 1, ">=5": 1}
    assert not rep.is_k_anonymous
    assert k_anonymity(df, ["b"], k=5).is_k_anonymous


def test_missing_values_form_their_own_class_and_k_is_validated():
    df = pd.DataFrame({"a": ["x", None, np.nan, "x"]})
    rep = k_anonymity(df, ["a"], k=2)
    assert rep.classes == 2 and rep.records_below_k == 0
    with pytest.raises(ValueError):
        k_anonymity(df, ["a"], k=0)
    with pytest.raises(KeyError):
        k_anonymity(df, ["nope"])
    assert k_anonymity(df.iloc[:0], ["a"]).records == 0


def test_twin_quasi_identifiers_from_sex_male():
    twins = pd.DataFrame({"age_band": ["40-44", "40-44"], "sex_male": [1.0, 0.0], "zip3": ["021", "021"],
                          "site_id": ["a", "a"]})
    qi = twin_quasi_identifiers(twins)
    assert list(qi.columns) == list(TWIN_QUASI_IDENTIFIERS) and list(qi["sex"]) == ["M", "F"]
    assert k_anonymity(qi, TWIN_QUASI_IDENTIFIERS, k=2).smallest_class == 1
