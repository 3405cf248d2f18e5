"""Shared generated cohorts for the synth tests (generated once per test session/worker)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from twin_pipeline.synth.generator import generate_cohort

SHORT_WAVEFORMS = {"ecg_monitor": 10, "ventilator": 20, "wearable": 30}


def run_generator(root: Path, **kwargs) -> tuple[dict, float]:
    """Generate into ``root/{landing,truth,sites}``; return (summary, wall seconds)."""
    t0 = time.perf_counter()
    summary = generate_cohort(root / "landing", truth_dir=root / "truth", sites_dir=root / "sites",
                              **kwargs)
    return summary, time.perf_counter() - t0


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> tuple[Path, dict]:
    """2 sites × 20 patients, short waveforms, seed 11, 2 deliveries."""
    root = tmp_path_factory.mktemp("small")
    summary, _ = run_generator(root, sites=2, patients=20, seed=11,
                               waveform_seconds=SHORT_WAVEFORMS)
    return root, summary


@pytest.fixture(scope="session")
def medium_cohort(tmp_path_factory) -> tuple[Path, dict]:
    """3 sites × 60 patients (84/60/36), shortened waveforms, seed 7, 2 deliveries."""
    root = tmp_path_factory.mktemp("medium")
    summary, _ = run_generator(root, sites=3, patients=60, seed=7,
                               waveform_seconds={"ecg_monitor": 20, "ventilator": 30,
                                                 "wearable": 60})
    return root, summary
