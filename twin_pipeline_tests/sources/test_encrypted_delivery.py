"""Enclave mode: encrypted deliveries decrypt only inside a run; tampering is rejected."""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path

import dagster as dg
import duckdb
import pyrage
import pytest

from twin_pipeline.resources import LandingResource
from twin_pipeline.sources.encrypted_delivery import (
    ARCHIVE_NAME,
    DeliveryIntegrityError,
    decrypt_delivery,
    encrypt_delivery,
    generate_identity,
)
from twin_pipeline.sources.landing import find_deliveries


@pytest.fixture(scope="module")
def keys():
    return generate_identity()


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_roundtrip_restores_every_file_byte_for_byte(tiny_cohort, tmp_path, keys):
    identity, recipient = keys
    src = find_deliveries(tiny_cohort["landing"])[0]
    out = tmp_path / "landing" / src.site_id / src.delivery_id
    archive = encrypt_delivery(src.path, out, recipient)
    assert (out / "_READY").exists() and sorted(p.name for p in out.iterdir()) == ["_READY", ARCHIVE_NAME]
    assert b"ehr/patients.csv" not in archive.read_bytes()  # no plaintext names in the sealed file
    plain = decrypt_delivery(out, identity)
    try:
        expected = [f for f in _files(src.path) if f != "_READY"]
        assert _files(plain) == expected
        for f in expected:
            assert (plain / f).read_bytes() == (src.path / f).read_bytes()
    finally:
        shutil.rmtree(plain)


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong_key"])
def test_tampered_truncated_or_foreign_archives_are_rejected(tiny_cohort, tmp_path, keys, damage):
    identity, recipient = keys
    src = find_deliveries(tiny_cohort["landing"])[0]
    out = tmp_path / "d" / src.site_id / src.delivery_id
    archive = encrypt_delivery(src.path, out, recipient)
    data = bytearray(archive.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 70_000]
    else:
        identity, _ = generate_identity()
    archive.write_bytes(bytes(data))
    with pytest.raises(DeliveryIntegrityError, match="rejected"):
        decrypt_delivery(out, identity, work_root=tmp_path)
    assert not list(tmp_path.glob("twin-enclave-*"))  # nothing half-unpacked left behind


def test_archive_with_a_path_outside_the_payload_is_rejected(tmp_path, keys):
    identity, recipient = keys
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    out = tmp_path / "s" / "site_x" / "2026-10-01"
    out.mkdir(parents=True)
    (out / ARCHIVE_NAME).write_bytes(pyrage.encrypt(buf.getvalue(), [pyrage.x25519.Recipient.from_str(recipient)]))
    with pytest.raises(DeliveryIntegrityError, match="unexpected member"):
        decrypt_delivery(out, identity, work_root=tmp_path)
    assert not (tmp_path / "s" / "site_x" / "escape.txt").exists()


def test_encrypted_delivery_materializes_like_the_plain_one_and_tampering_loads_nothing(tiny_cohort, tmp_path, keys):
    from twin_pipeline_tests.defs.test_site_delivery_materialize import _instance_with, _materialize
    from twin_pipeline_tests.conftest import make_resources

    identity, recipient = keys
    src = find_deliveries(tiny_cohort["landing"])[0]
    enc_landing = tmp_path / "enc_landing"
    encrypt_delivery(src.path, enc_landing / src.site_id / src.delivery_id, recipient)

    plain_res = make_resources(tiny_cohort, tmp_path / "plain")
    enc_res = make_resources(dict(tiny_cohort, landing=enc_landing), tmp_path / "enc")
    enc_res["landing"] = LandingResource(
        landing_dir=str(enc_landing), quarantine_dir=str(tmp_path / "enc" / "q"),
        sites_dir=str(tiny_cohort["sites"]), enclave_identity=identity,
    )
    instance = _instance_with(find_deliveries(tiny_cohort["landing"]))
    assert _materialize(instance, plain_res, src.site_id, src.delivery_id).success
    before = set(Path(tempfile.gettempdir()).glob("twin-enclave-*"))
    assert _materialize(instance, enc_res, src.site_id, src.delivery_id).success
    assert set(Path(tempfile.gettempdir()).glob("twin-enclave-*")) <= before  # plaintext removed at teardown
    q = "select * from deid.observation order by source_row"
    plain = duckdb.connect(str(tmp_path / "plain" / "warehouse.duckdb"), read_only=True).execute(q).df()
    enc = duckdb.connect(str(tmp_path / "enc" / "warehouse.duckdb"), read_only=True).execute(q).df()
    assert len(plain) > 0 and plain.equals(enc)
    assert sorted(p.name for p in (enc_landing / src.site_id / src.delivery_id).iterdir()) == ["_READY", ARCHIVE_NAME]

    archive = enc_landing / src.site_id / src.delivery_id / ARCHIVE_NAME
    data = bytearray(archive.read_bytes())
    data[-100] ^= 0xFF
    archive.write_bytes(bytes(data))
    bad_res = dict(enc_res, io_manager=make_resources(tiny_cohort, tmp_path / "bad")["io_manager"])
    result = _materialize(instance, bad_res, src.site_id, src.delivery_id, raise_on_error=False)
    assert not result.success
    assert not result.get_asset_materialization_events()
    errors = " ".join(str(e.event_specific_data.error) for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "integrity" in errors and "rejected" in errors
    assert not (tmp_path / "bad" / "warehouse.duckdb").exists() or not duckdb.connect(
        str(tmp_path / "bad" / "warehouse.duckdb"), read_only=True
    ).execute("select count(*) from information_schema.tables where table_schema='deid'").fetchone()[0]
