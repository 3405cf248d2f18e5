"""Cost of homomorphic (Paillier) vs plaintext aggregation of site count vectors.

    .venv/bin/python benchmarks/homomorphic_aggregation.py [--sites 3 10] [--cells 30 500] [--bits 2048]

A site's vector is one 4CE-style file's counts (30 cells ≈ AgeSex, 500 ≈ DiagProcMed). Prints wall time per
site (encrypt), at the coordinator (sum), for the key holder (decrypt), and bytes leaving each site.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from twin_pipeline.lib import homomorphic as he


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--cells", type=int, nargs="+", default=[30, 500])
    ap.add_argument("--bits", type=int, default=2048)
    args = ap.parse_args()
    pk, sk = he.generate_keypair(args.bits)
    rng = np.random.default_rng(0)
    print(f"Paillier {args.bits}-bit (phe + gmpy2); plaintext = numpy sum of int64 vectors")
    print(f"{'sites':>5} {'cells':>6} {'plain sum ms':>13} {'encrypt s/site':>15} {'sum s':>7} {'decrypt s':>10} "
          f"{'bytes/site plain':>17} {'bytes/site enc':>15} {'exact':>6}")
    for n_sites in args.sites:
        for cells in args.cells:
            vecs = [rng.integers(0, 500, cells) for _ in range(n_sites)]
            t = time.perf_counter()
            plain = np.sum(vecs, axis=0)
            t_plain = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            enc = [he.encrypt_counts(pk, v) for v in vecs]
            t_enc = (time.perf_counter() - t) / n_sites
            t = time.perf_counter()
            total = he.sum_encrypted(enc)
            t_sum = time.perf_counter() - t
            t = time.perf_counter()
            dec = he.decrypt_total(sk, total)
            t_dec = time.perf_counter() - t
            bytes_plain = len(",".join(str(int(x)) for x in vecs[0]).encode())
            bytes_enc = len(json.dumps([str(c.ciphertext()) for c in enc[0]]).encode())
            print(f"{n_sites:>5} {cells:>6} {t_plain:>13.3f} {t_enc:>15.2f} {t_sum:>7.3f} {t_dec:>10.3f} "
                  f"{bytes_plain:>17,} {bytes_enc:>15,} {str(bool((dec == plain).all())):>6}")


if __name__ == "__main__":
    main()
