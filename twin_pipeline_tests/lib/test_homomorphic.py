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


def _patients(n: int, seed: int) -> pd.DataFrame:
    from twin_pipeline.lib import federated as fed

    rng = np.random.default_rng(seed)
    groups = [g for _, _, g in fed.AGE_GROUPS] + ["other"]
    return pd.DataFrame({"age_group": rng.choice(groups, n), "sex": rng.choice(list(fed.SEXES), n),
                         "severe": rng.random(n) < 0.3})


def test_he_total_of_site_files_equals_the_plaintext_sum_of_unobfuscated_counts(keys, tmp_path):
    """Sites encrypt their unobfuscated AgeSex vectors over the agreed cell list and write them as files;
    the coordinator reads, sums and decrypts only the total, which equals the plaintext sum."""
    from twin_pipeline.lib import federated as fed

    pk, sk = keys
    cols = ["pts_all", "pts_ever_severe"]
    plain = []
    for i, n in enumerate([40, 7, 0]):  # a tiny site and an empty one: small counts are not masked here
        counts = fed.age_sex_cell_counts(_patients(n, i))
        vec = counts[cols].to_numpy().ravel()
        plain.append(vec)
        he.write_ciphertexts(tmp_path / f"site{i}" / "AgeSex.paillier.json", f"site{i}", pk, fed.AGE_SEX_CELLS, cols,
                             he.encrypt_counts(pk, vec))
    vectors = []
    for i in range(3):
        site, enc = he.read_ciphertexts(tmp_path / f"site{i}" / "AgeSex.paillier.json", pk, fed.AGE_SEX_CELLS, cols)
        assert site == f"site{i}"
        vectors.append(enc)
    total = he.decrypt_total(sk, he.sum_encrypted(vectors))
    assert total.tolist() == np.sum(plain, axis=0).tolist()
    assert int(total[0::2].sum()) == 47  # pts_all over every cell = every patient once
    raw = (tmp_path / "site1" / "AgeSex.paillier.json").read_text()
    assert '"pts_all"' in raw and str(sk.p) not in raw  # ciphertexts only, no key material


def test_ciphertext_files_under_another_key_or_cell_list_are_rejected_by_site(keys, tmp_path):
    pk, _ = keys
    other_pk, _ = he.generate_keypair(n_length=512)
    cells = [("a", "female"), ("a", "male")]
    path = tmp_path / "AgeSex.paillier.json"
    he.write_ciphertexts(path, "hospital_q", other_pk, cells, ["n"], he.encrypt_counts(other_pk, [1, 2]))
    with pytest.raises(ValueError, match="hospital_q.*another public key"):
        he.read_ciphertexts(path, pk, cells, ["n"])
    he.write_ciphertexts(path, "hospital_q", pk, cells, ["n"], he.encrypt_counts(pk, [1, 2]))
    with pytest.raises(ValueError, match="hospital_q.*another cell list"):
        he.read_ciphertexts(path, pk, cells[:1] + [("b", "male")], ["n"])


def test_keypair_is_generated_once_and_the_private_key_file_is_private(tmp_path):
    key_dir = tmp_path / "keys"
    pk1 = he.load_or_create_keypair(key_dir, n_length=512)
    pk2 = he.load_or_create_keypair(key_dir, n_length=512)
    assert he.key_fingerprint(pk1) == he.key_fingerprint(pk2)
    assert (key_dir / he.PRIVATE_KEY_FILE).stat().st_mode & 0o077 == 0
    sk = he.load_private_key(key_dir)
    assert sk.decrypt(pk1.encrypt(41) + pk2.encrypt(1)) == 42
    assert str(sk.p) not in (key_dir / he.PUBLIC_KEY_FILE).read_text()
