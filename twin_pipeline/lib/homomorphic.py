"""Additively homomorphic aggregation of site count vectors (Paillier, via `phe`).

Each site encrypts its *unobfuscated* count vector (e.g. patients per age group × sex) under the key
authority's public key; the coordinator adds ciphertexts element-wise without being able to read any
single site's counts; only the total is decrypted, by the key holder. Counts must use the same
cell order at every site (`align_counts`). Keys and ciphertext vectors are stored as JSON files
(`save_keypair`, `write_ciphertexts`); the private key file never leaves the key directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

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


# ----------------------------------------------------------------------------------- keys and files
# The coordinator's keypair lives in a key directory (public_key.json, private_key.json with mode 0600);
# sites need only the public key. Ciphertext files carry the public key's fingerprint so that a file
# encrypted under another key is rejected by name instead of decrypting to garbage.

PUBLIC_KEY_FILE = "public_key.json"
PRIVATE_KEY_FILE = "private_key.json"


def key_fingerprint(public_key: paillier.PaillierPublicKey) -> str:
    """Short SHA-256 fingerprint of the public modulus (safe to log)."""
    import hashlib

    return hashlib.sha256(str(public_key.n).encode()).hexdigest()[:16]


def save_keypair(key_dir: Path, public_key: paillier.PaillierPublicKey,
                 private_key: paillier.PaillierPrivateKey) -> None:
    """Write the keypair; the private key file is created with mode 0600 and never overwritten."""
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    priv = key_dir / PRIVATE_KEY_FILE
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"p": str(private_key.p), "q": str(private_key.q)}, f)
    (key_dir / PUBLIC_KEY_FILE).write_text(json.dumps({"n": str(public_key.n), "bits": public_key.n.bit_length()}))


def load_public_key(key_dir: Path) -> paillier.PaillierPublicKey:
    path = Path(key_dir) / PUBLIC_KEY_FILE
    if not path.exists():
        raise FileNotFoundError(f"no Paillier public key at {path}: the coordinator must generate the keypair first")
    return paillier.PaillierPublicKey(int(json.loads(path.read_text())["n"]))


def load_private_key(key_dir: Path) -> paillier.PaillierPrivateKey:
    pk = load_public_key(key_dir)
    path = Path(key_dir) / PRIVATE_KEY_FILE
    if not path.exists():
        raise FileNotFoundError(f"no Paillier private key at {path} (only the coordinator holds it)")
    d = json.loads(path.read_text())
    p, q = int(d["p"]), int(d["q"])
    if p * q != pk.n:
        raise ValueError(f"Paillier private key in {key_dir} does not match its public key")
    return paillier.PaillierPrivateKey(pk, p, q)


def load_or_create_keypair(key_dir: Path, n_length: int = 2048) -> paillier.PaillierPublicKey:
    """The coordinator's public key, generating the keypair once if the directory has none."""
    import fcntl

    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    with open(key_dir / ".keygen.lock", "w") as lock:  # two first runs must not race to create two keys
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (key_dir / PUBLIC_KEY_FILE).exists():
            if (key_dir / PRIVATE_KEY_FILE).exists():
                raise FileExistsError(f"{key_dir} holds a private key without its public key; refusing to replace it")
            save_keypair(key_dir, *generate_keypair(n_length))
    return load_public_key(key_dir)


def write_ciphertexts(path: Path, site_id: str, public_key: paillier.PaillierPublicKey, cells: Sequence[tuple],
                      columns: Sequence[str], encrypted: Sequence[paillier.EncryptedNumber]) -> int:
    """One site's encrypted vector as JSON (cells × columns, row-major). Returns bytes written."""
    if len(encrypted) != len(cells) * len(columns):
        raise ValueError(f"{site_id}: {len(encrypted)} ciphertexts for {len(cells)} cells × {len(columns)} columns")
    doc = {
        "siteid": site_id, "scheme": "paillier", "key_fingerprint": key_fingerprint(public_key),
        "cells": [list(c) for c in cells], "columns": list(columns),
        "ciphertexts": [[str(e.ciphertext(be_secure=True)), e.exponent] for e in encrypted],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    return path.stat().st_size


def read_ciphertexts(path: Path, public_key: paillier.PaillierPublicKey, cells: Sequence[tuple],
                     columns: Sequence[str]) -> tuple[str, list[paillier.EncryptedNumber]]:
    """A site's ciphertext file, checked against the expected key, cell list and columns."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a valid ciphertext file ({exc.msg})") from None
    site = doc.get("siteid", "?")
    if doc.get("key_fingerprint") != key_fingerprint(public_key):
        raise ValueError(f"site {site}: ciphertexts in {path} were made under another public key "
                         f"({doc.get('key_fingerprint')} ≠ {key_fingerprint(public_key)}); re-encrypt at the site")
    if [tuple(c) for c in doc.get("cells", [])] != [tuple(c) for c in cells] or doc.get("columns") != list(columns):
        raise ValueError(f"site {site}: ciphertexts in {path} use another cell list or columns than the agreed one")
    if len(doc["ciphertexts"]) != len(cells) * len(columns):
        raise ValueError(f"site {site}: {path} holds {len(doc['ciphertexts'])} ciphertexts, "
                         f"expected {len(cells) * len(columns)}")
    enc = [paillier.EncryptedNumber(public_key, int(c), int(e)) for c, e in doc["ciphertexts"]]
    return site, enc
