"""Paillier aggregation: encrypted sums equal plaintext sums; no single site is readable without the key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_pipeline.lib import homomorphic as he


@pytest.fixture(scope="module")
def keys():
    return he.generate_keypair(n_length=1024)  # small key: test speed only; production uses 2048


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(st.integers(0, 10_000), min_size=4, max_size=4), min_size=1, max_size=5))
def test_homomorphic_sum_equals_plaintext_sum(keys, site_vectors):
    pk, sk = keys
    enc = [he.encrypt_counts(pk, v) for v in site_vectors]
    total = he.decrypt_total(sk, he.sum_encrypted(enc))
    assert total.tolist() == np.sum(np.array(site_vectors), axis=0).tolist()


def test_ciphertexts_hide_counts_and_are_randomized(keys):
    pk, sk = keys
    a, b = he.encrypt_counts(pk, [3, 3])
    assert a.ciphertext(be_secure=True) != b.ciphertext(be_secure=True)  # same count, different ciphertexts
    assert 3 not in (a.ciphertext(be_secure=False), b.ciphertext(be_secure=False))
    with pytest.raises(ValueError, match="non-negative"):
        he.encrypt_counts(pk, [-99])


def test_align_counts_uses_a_fixed_cell_order():
    df = pd.DataFrame({"age_group": ["26to49", "50to69"], "sex": ["female", "male"], "pts_all": [7, 4]})
    cells = [("18to20", "female"), ("26to49", "female"), ("50to69", "male")]
    assert he.align_counts(df, ["age_group", "sex"], "pts_all", cells).tolist() == [0, 7, 4]
