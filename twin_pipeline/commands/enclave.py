"""Enclave mode helpers: `enclave-keygen` and `encrypt-delivery` (age / pyrage)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from twin_pipeline.sources.encrypted_delivery import encrypt_delivery, generate_identity
from twin_pipeline.sources.landing import DELIVERY_RE, SITE_ID_RE


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists: refusing to overwrite an enclave key (use --force)")
    identity, recipient = generate_identity()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# twin_pipeline enclave identity; public recipient: {recipient}\n{identity}\n")
    print(f"wrote the enclave identity to {out} (mode 600); give sites this recipient:\n{recipient}")
    print("set TWIN_ENCLAVE_IDENTITY to the AGE-SECRET-KEY line for the pipeline")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    if not SITE_ID_RE.match(args.site):
        raise SystemExit(f"invalid site id {args.site!r}")
    if not DELIVERY_RE.match(args.delivery):
        raise SystemExit(f"invalid delivery {args.delivery!r}: expected YYYY-MM-DD")
    landing = Path(args.landing or os.environ["TWIN_LANDING_DIR"])
    out = landing / args.site / args.delivery
    archive = encrypt_delivery(Path(args.plain_dir), out, args.recipient)
    print(f"encrypted delivery written: {archive} ({archive.stat().st_size / 1e6:.1f} MB) and _READY")
    return 0


def register(sub) -> None:
    k = sub.add_parser("enclave-keygen", help="create the enclave's age key pair (secret file + public recipient)")
    k.add_argument("--out", required=True, help="where to write the secret identity (mode 600)")
    k.add_argument("--force", action="store_true")
    k.set_defaults(func=cmd_keygen)

    e = sub.add_parser("encrypt-delivery", help="seal a site's plaintext delivery folder for the enclave")
    e.add_argument("plain_dir", help="folder with ehr/, interviews/, waveforms/")
    e.add_argument("--recipient", required=True, help="the enclave's age1… recipient")
    e.add_argument("--site", required=True)
    e.add_argument("--delivery", required=True, help="YYYY-MM-DD")
    e.add_argument("--landing", help="landing root (default $TWIN_LANDING_DIR)")
    e.set_defaults(func=cmd_encrypt)
