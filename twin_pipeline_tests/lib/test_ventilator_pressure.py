"""Pressure-only ventilator analysis: breaths, rate, PIP/PEEP, I:E and rapidalarm-style alarms from
airway pressure alone (known lung model, planted faults, the rapidalarm test-lung recordings)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib.ventilator import (
    VENTILATOR_FEATURE_KEYS,
    pressure_alarms,
    pressure_breath_segments,
    pressure_breath_table,
    pressure_features,
    ventilator_features,
    ventilator_simulate,
)
from twin_pipeline_tests.conftest import shared_data

SCENARIOS = ("exit_port_leak", "low_flow", "low_rate", "lung_disconnect", "noncompliant")


def _testlung(name: str) -> tuple[np.ndarray, float]:
    path = shared_data("ventilator", "testlung", f"{name}.csv")
    with path.open() as fh:
        fs = float(fh.readline().split(",")[1])
    return pd.read_csv(path, skiprows=1)["pressure"].to_numpy(dtype=float), fs


def _runs(t: np.ndarray) -> list[tuple[float, float]]:
    """Alarm seconds (window starts) → [(first, last + 1)] runs of consecutive seconds."""
    if len(t) == 0:
        return []
    parts = np.split(t, np.flatnonzero(np.diff(t) > 1) + 1)
    return [(float(r[0]), float(r[-1]) + 1) for r in parts]


@pytest.mark.parametrize("rr, vt, peep, ie", [(15, 500, 5, 0.5), (24, 380, 10, 0.4), (10, 650, 0, 1.0)])
def test_known_lung_model_from_pressure_alone(rr, vt, peep, ie):
    compliance, resistance = 45.0, 12.0
    paw, _ = ventilator_simulate(120, 50, resp_rate=rr, tidal_volume_ml=vt, peep_cmh2o=peep, ie_ratio=ie,
                                 compliance_ml_cmh2o=compliance, resistance_cmh2o_l_s=resistance)
    paw = paw + np.random.default_rng(rr).normal(0.0, 0.2, len(paw))  # sensor noise, cmH2O
    feats = pressure_features(paw, 50)
    assert list(feats) == list(VENTILATOR_FEATURE_KEYS)
    assert feats["quality_flag"] == "low_quality" and feats["quality_reason"] == "pressure_only"
    ti = 60 / rr * ie / (1 + ie)
    pip = peep + vt / compliance + resistance * vt / ti / 1000  # equation of motion at end-inspiration
    assert abs(feats["resp_rate_bpm"] - rr) <= 0.02 * rr
    assert abs(feats["peep_cmh2o"] - peep) <= 0.3
    assert abs(feats["pip_cmh2o"] - pip) <= 0.03 * pip
    assert abs(feats["ie_ratio"] - ie) <= 0.05 * ie
    assert feats["n_breaths"] == pytest.approx(120 / 60 * rr - 2, abs=1)
    assert feats["alarm_fraction"] == 0.0  # regular breathing at a normal rate: no alarm
    for key in ("tidal_volume_insp_ml", "tidal_volume_exp_ml", "minute_ventilation_l_min",
                "dynamic_compliance_ml_cmh2o", "compliance_lsf_ml_cmh2o", "resistance_lsf_cmh2o_l_s"):
        assert np.isnan(feats[key]), key


def test_pressure_segments_bound_each_breath():
    paw, _ = ventilator_simulate(60, 50, resp_rate=20, peep_cmh2o=6)
    seg = pressure_breath_segments(paw, 50)
    assert list(seg.columns) == ["start", "insp_end", "end", "has_nan"]
    assert len(seg) == 18  # 20 cycles minus the one cut by the record start and the last (no next start)
    assert (seg["start"] < seg["insp_end"]).all() and (seg["insp_end"] < seg["end"]).all()
    assert (seg["end"].to_numpy()[:-1] == seg["start"].to_numpy()[1:]).all()
    # a cycle is 150 samples, inspiration its first third: starts on the cycle grid, Ti = 50 samples
    assert (seg["start"] % 150 == 0).all() and ((seg["insp_end"] - seg["start"]) == 50).all()


def _planted_faults(fs: float = 50.0) -> np.ndarray:
    """120 s at 15 /min; 40–70 s circuit disconnected (Paw 0.5 cmH2O); 90–110 s at 60 /min."""
    normal, _ = ventilator_simulate(120, fs, resp_rate=15, peep_cmh2o=8)
    fast, _ = ventilator_simulate(120, fs, resp_rate=60, tidal_volume_ml=150, peep_cmh2o=8, ie_ratio=0.5)
    t = np.arange(len(normal)) / fs
    paw = np.where((t >= 90) & (t < 110), fast, normal)
    paw[(t >= 40) & (t < 70)] = 0.5
    return paw + np.random.default_rng(0).normal(0.0, 0.1, len(paw))


def test_planted_disconnect_apnea_and_fast_breathing_raise_their_alarms():
    al = pressure_alarms(_planted_faults(), 50)
    assert list(al.columns) == ["t_s", "low_pressure", "apnea", "high_rate", "alarm"] and len(al) == 120
    # disconnect: low pressure from the first whole second after the drop to the reconnection
    assert _runs(al.loc[al["low_pressure"], "t_s"].to_numpy()) == [(40.0, 70.0)]
    # the last breath before the drop starts at 36 s: the second ending at 47 s is the first with no
    # breath start for > 10 s; the pressure step back up at 70 s is the next rise
    assert _runs(al.loc[al["apnea"], "t_s"].to_numpy()) == [(46.0, 69.0)]
    fast = _runs(al.loc[al["high_rate"], "t_s"].to_numpy())
    assert len(fast) == 1 and 90 <= fast[0][0] <= 96 and 109 <= fast[0][1] <= 116
    # apnea lies inside the disconnection: any-alarm time = disconnection + fast breathing
    assert al["alarm"].mean() == pytest.approx(((70 - 40) + (fast[0][1] - fast[0][0])) / 120)


def test_unusable_pressure_is_flagged_not_raised():
    assert pressure_features(np.full(500, np.nan), 50)["quality_reason"] == "no_pressure"
    assert pressure_features(np.zeros(0), 50)["quality_reason"] == "no_pressure"
    flat = pressure_features(np.full(3000, 5.0) + np.random.default_rng(1).normal(0, 0.05, 3000), 50)
    assert flat["quality_flag"] == "no_signal" and flat["quality_reason"] == "flat_pressure"
    t = np.arange(3000) / 50
    swing = pressure_features(5 + 1.2 * np.sin(2 * np.pi * 0.3 * t), 50)  # 2.4 cmH2O swing < 3: no breath
    assert swing["quality_flag"] == "no_signal" and swing["quality_reason"] == "no_breaths"
    buzz = pressure_features(10 + 8 * np.sin(2 * np.pi * 2.0 * t), 50)  # 120 /min: not ventilation
    assert buzz["quality_reason"] == "implausible_rate" and np.isnan(buzz["resp_rate_bpm"])
    assert pressure_alarms(np.ones(20), 50).empty  # shorter than one alarm window


def test_nan_gap_drops_only_the_breaths_it_touches():
    paw, _ = ventilator_simulate(120, 50, resp_rate=15, peep_cmh2o=5)
    paw[1000:1100] = np.nan  # 2 s dropout
    seg = pressure_breath_segments(paw, 50)
    assert 1 <= seg["has_nan"].sum() <= 2
    table = pressure_breath_table(paw, 50)
    assert len(table) == len(seg) - seg["has_nan"].sum()
    feats = pressure_features(paw, 50)
    assert feats["quality_reason"] == "pressure_only" and abs(feats["resp_rate_bpm"] - 15) < 0.3


def test_flow_records_carry_the_pressure_alarm_fraction():
    paw, flow = ventilator_simulate(60, 50)
    assert ventilator_features(paw, flow, 50)["alarm_fraction"] == 0.0
    assert np.isnan(ventilator_features(None, flow, 50)["alarm_fraction"])


# ---- real test-lung recordings (rapidalarm, emergency ventilator on an artificial lung) ----------

# rate ranges from the peak-to-peak intervals of each file (normal cycling: leak and disconnect
# 1.86–1.90 s, low_flow 2.8–3.7 s, low_rate 3.43–3.46 s, noncompliant 2.0–3.7 s outside the squeeze)
RR_RANGE = {"exit_port_leak": (30, 34), "lung_disconnect": (30, 34), "low_flow": (16, 21), "low_rate": (16, 19),
            "noncompliant": (16, 30)}


@pytest.mark.parametrize("name", SCENARIOS)
def test_testlung_scenario_gives_plausible_rate_and_pressures(name):
    paw, fs = _testlung(name)
    feats = pressure_features(paw, fs)
    assert feats["quality_flag"] == "low_quality" and feats["quality_reason"] == "pressure_only"
    lo, hi = RR_RANGE[name]
    assert lo <= feats["resp_rate_bpm"] <= hi
    # every file cycles between a PEEP of ~12 and peaks of 37–42 cmH2O when ventilating normally
    assert 11 <= feats["peep_cmh2o"] <= 14 and 36 <= feats["pip_cmh2o"] <= 43
    assert 0.2 <= feats["ie_ratio"] <= 2.0 and feats["n_breaths"] >= 7
    assert np.isnan(feats["tidal_volume_insp_ml"])


def test_testlung_disconnect_and_leak_raise_low_pressure_alarms_the_others_do_not():
    alarms = {name: pressure_alarms(*_testlung(name)) for name in SCENARIOS}
    frac = {name: float(al["alarm"].mean()) for name, al in alarms.items()}
    low = {name: float(al["low_pressure"].mean()) for name, al in alarms.items()}
    for fault in ("exit_port_leak", "lung_disconnect"):
        assert low[fault] >= 0.35
        assert frac[fault] > max(frac[n] for n in ("low_flow", "low_rate", "noncompliant"))
    for other in ("low_flow", "low_rate", "noncompliant"):
        assert low[other] == 0.0
    # the alarm sits on the visibly collapsed segment: leak 8.5–27.3 s, disconnect 14.1–32.7 s
    assert _runs(alarms["exit_port_leak"].query("low_pressure")["t_s"].to_numpy()) == [(9.0, 27.0)]
    assert _runs(alarms["lung_disconnect"].query("low_pressure")["t_s"].to_numpy()) == [(14.0, 33.0)]


def test_testlung_rate_faults_raise_rate_alarms():
    low_rate = pressure_alarms(*_testlung("low_rate"))
    # cycles lengthen to 7 and 10 s, then none after 53.2 s: apnea only in the final > 10 s gap
    assert _runs(low_rate.query("apnea")["t_s"].to_numpy()) == [(62.0, 64.0)]
    squeezed = pressure_alarms(*_testlung("noncompliant"))
    fast = squeezed.query("high_rate")["t_s"].to_numpy()
    # shallow 0.4–0.65 s cycles from 16 to 34.5 s: the high-rate alarm lies within that stretch
    # (+ up to 5 s while the fast breaths still fill half of the 10-s look-back, + 1 s window)
    assert len(fast) >= 15 and fast.min() >= 16 and fast.max() + 1 <= 41
    assert not squeezed["low_pressure"].any() and not squeezed["apnea"].any()


def test_pressure_only_breaths_on_pb840_match_ventmap():
    from twin_pipeline.lib.ventilator import read_pb840

    df = read_pb840(shared_data("ventilator", "pb840", "0149_2016-02-17-08-38-13_1.csv_test"))
    meta = pd.read_csv(shared_data("ventilator", "pb840", "0149_2016-02-17-08-38-13_1_v5_1_0__breath_meta.csv_test"))
    meta.columns = [c.strip() for c in meta.columns]
    table = pressure_breath_table(df["pressure_cmh2o"].to_numpy(), 50)
    ref = meta["BS"].to_numpy()[:, None]
    ours = table["start"].to_numpy()[None, :] / 50
    matched = (np.abs(ours - ref) <= 0.3).any(axis=1)
    assert matched.mean() >= 0.98
    feats = pressure_features(df["pressure_cmh2o"].to_numpy(), 50)
    assert abs(feats["resp_rate_bpm"] - meta["inst_RR"].median()) <= 0.05 * meta["inst_RR"].median()
    assert abs(feats["pip_cmh2o"] - meta["PIP"].median()) <= 1.0
    assert abs(feats["peep_cmh2o"] - meta["PEEP"].median()) <= 1.0


def test_file_features_reads_testlung_exports_as_pressure_only_ventilator_rows():
    from twin_pipeline.lib.waveform import feature_columns, file_features

    out = file_features(shared_data("ventilator", "testlung", "lung_disconnect.csv"), "ventilator")
    assert out["device_kind"] == "ventilator" and list(out)[1:] == feature_columns("ventilator")
    assert out["quality_reason"] == "pressure_only" and out["sampling_rate_hz"] == 133.0
    assert out["n_channels"] == 1 and 30 <= out["resp_rate_bpm"] <= 34 and out["alarm_fraction"] > 0.35


def test_file_features_uses_flow_when_the_rapidalarm_csv_has_it(tmp_path):
    from twin_pipeline.lib.waveform import file_features

    paw, flow = ventilator_simulate(60, 50, resp_rate=18, tidal_volume_ml=450, peep_cmh2o=6)
    path = tmp_path / "with_flow.csv"
    rows = "\n".join(f"{p:.3f},{f:.3f},,," for p, f in zip(paw, flow))
    path.write_text(f"#samplerate,50\npressure,flow,pip,peep,rr\n{rows}\n")
    out = file_features(path, "ventilator")
    assert out["n_channels"] == 2 and out["quality_flag"] == "ok"
    assert abs(out["tidal_volume_insp_ml"] - 450) <= 0.05 * 450 and abs(out["resp_rate_bpm"] - 18) <= 0.5
    path.write_text("#samplerate,50\npressure\n" + "\n".join(f"{p:.3f}" for p in paw) + "\n")
    alone = file_features(path, "ventilator")
    assert alone["quality_reason"] == "pressure_only" and np.isnan(alone["tidal_volume_insp_ml"])
