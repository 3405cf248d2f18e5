"""Additively homomorphic aggregation of site count vectors (Paillier, via `phe`).

Each site encrypts its *unobfuscated* count vector (e.g. patients per age group × sex) under the key
authority's public key; the coordinator adds ciphertexts element-wise without being able to read any
single site's counts; only the total is decrypted, by the key holder. Counts must use the same
cell order at every site (`align_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from phe import paillier


def generate_keypair(n_length: int = 2048) -> tuple[paillier.PaillierPublicKey, paillier.PaillierPrivateKey]:
    return paillier.generate_paillier_keypair(n_length=n_length)


def align_counts(df: pd.DataFrame, keys: list[str], count_col: str, cells: Sequence[tuple]) -> np.ndarray:
    """The site's counts in a fixed cell order (missing cells are 0)."""
    lookup = {tuple(r[k] for k in keys): int(r[count_col]) for r in df.to_dict("records")}
    return np.array([lookup.get(tuple(c), 0) for c in cells], dtype=np.int64)


def encrypt_counts(public_key: paillier.PaillierPublicKey, counts: Sequence[int]) -> list[paillier.EncryptedNumber]:
    """A site's count vector, encrypted cell by cell (non-negative integers only)."""
    values = [int(c) for c in counts]
    if any(v < 0 for v in values):
        raise ValueError("counts must be non-negative integers (obfuscation masks are not encrypted)")
    return [public_key.encrypt(v) for v in values]


def sum_encrypted(vectors: Sequence[Sequence[paillier.EncryptedNumber]]) -> list[paillier.EncryptedNumber]:
    """Coordinator: element-wise sum of the sites' ciphertext vectors (no key needed)."""
    if not vectors:
        raise ValueError("no site vectors to sum")
    n = len(vectors[0])
    if any(len(v) != n for v in vectors):
        raise ValueError("site vectors have different lengths: align the cells first")
    total = list(vectors[0])
    for v in vectors[1:]:
        total = [a + b for a, b in zip(total, v)]
    return total


def decrypt_total(private_key: paillier.PaillierPrivateKey, total: Sequence[paillier.EncryptedNumber]) -> np.ndarray:
    """Key holder: decrypt the pooled vector only."""
    return np.array([private_key.decrypt(c) for c in total], dtype=np.int64)
