"""Encrypted deliveries for the enclave mode: a site's delivery folder sealed with age (pyrage).

A site packs `ehr/`, `interviews/` and `waveforms/` of a delivery into a tar archive, encrypts it to the
enclave's age X25519 recipient and lands it as

    data/landing/<site>/<delivery>/delivery.tar.age   (+ `_READY`, written last)

The pipeline decrypts only inside a run, into a private temporary folder outside the landing area,
which is deleted when the run's resources are torn down: no plaintext is ever left in landing.
age authenticates every 64 KiB chunk and marks the last one, so a tampered or truncated archive
fails to decrypt and the whole delivery is rejected before anything is read.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pyrage

ARCHIVE_NAME = "delivery.tar.age"
PAYLOAD_DIRS = ("ehr", "interviews", "waveforms")


class DeliveryIntegrityError(Exception):
    """The archive does not decrypt/verify (tampered, truncated, wrong key) or is not a safe tar."""


def generate_identity() -> tuple[str, str]:
    """A new enclave key pair: (secret identity `AGE-SECRET-KEY-1…`, public recipient `age1…`)."""
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def recipient_of(identity: str) -> str:
    return str(pyrage.x25519.Identity.from_str(identity.strip()).to_public())


def is_encrypted(delivery_dir: Path) -> bool:
    return (Path(delivery_dir) / ARCHIVE_NAME).exists()


def encrypt_delivery(plain_dir: Path, out_dir: Path, recipient: str, *, ready: bool = True) -> Path:
    """Pack and encrypt a plaintext delivery folder for the enclave; write `_READY` last.

    `plain_dir` holds `ehr/`, `interviews/`, `waveforms/` (any subset). Returns the archive path.
    """
    plain_dir, out_dir = Path(plain_dir), Path(out_dir)
    present = [d for d in PAYLOAD_DIRS if (plain_dir / d).is_dir()]
    if not present:
        raise ValueError(f"{plain_dir} has none of {PAYLOAD_DIRS}: nothing to encrypt")
    try:
        rcpt = pyrage.x25519.Recipient.from_str(recipient.strip())
    except Exception as exc:  # noqa: BLE001 - pyrage raises its own error types
        raise ValueError(f"not an age X25519 recipient: {type(exc).__name__}") from None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in present:
            for path in sorted((plain_dir / d).rglob("*")):
                if path.is_file():
                    info = tar.gettarinfo(str(path), arcname=str(path.relative_to(plain_dir)))
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = 0  # no wall-clock metadata in the archive
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / ARCHIVE_NAME
    tmp = out_dir / (ARCHIVE_NAME + ".partial")
    tmp.write_bytes(pyrage.encrypt(buf.getvalue(), [rcpt]))
    os.replace(tmp, archive)
    if ready:
        (out_dir / "_READY").touch()
    return archive


def decrypt_delivery(delivery_dir: Path, identity: str, work_root: Path | None = None) -> Path:
    """Decrypt and unpack `delivery.tar.age` into a new private temp folder; return its path.

    Raises DeliveryIntegrityError (naming the delivery, never its content) on any failure; the
    partially written folder is removed.
    """
    delivery_dir = Path(delivery_dir)
    where = f"{delivery_dir.parent.name}/{delivery_dir.name}"
    try:
        ident = pyrage.x25519.Identity.from_str(identity.strip())
    except Exception:  # noqa: BLE001
        raise DeliveryIntegrityError(f"enclave identity is not a valid age X25519 secret key ({where})") from None
    try:
        plain = pyrage.decrypt((delivery_dir / ARCHIVE_NAME).read_bytes(), [ident])
    except pyrage.DecryptError as exc:
        raise DeliveryIntegrityError(
            f"encrypted delivery {where} failed decryption/integrity check ({str(exc)[:80]}): rejected, nothing loaded"
        ) from None
    out = Path(tempfile.mkdtemp(prefix="twin-enclave-", dir=work_root))
    os.chmod(out, 0o700)
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
            for member in tar.getmembers():
                top = Path(member.name).parts[0] if Path(member.name).parts else ""
                if top not in PAYLOAD_DIRS or not (member.isfile() or member.isdir()):
                    raise DeliveryIntegrityError(f"encrypted delivery {where} holds an unexpected member: rejected")
            tar.extractall(out, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(out, ignore_errors=True)
        raise DeliveryIntegrityError(f"encrypted delivery {where} is not a valid archive ({type(exc).__name__})") from None
    except DeliveryIntegrityError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out
