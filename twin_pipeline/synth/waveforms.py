"""Synthetic device waveforms (ECG monitor, ventilator, wearable) written as WFDB records.

Signals are simple physiological models with known ground truth: ECG from Gaussian PQRST beats
(ECGSYN morphology in the time domain) at a true mean heart rate; ventilator airway pressure (cmH2O) and
flow (L/min, positive = inspiration) from a single-compartment lung (resistance, compliance) under
volume or pressure control; wearable PPG from ``nk.ppg_simulate`` plus an accelerometer magnitude
(g) with walking bouts that raise the heart rate. Records are written with ``wfdb.wrsamp``
(format 16, fixed ADC gains, physical units in the header, NaN stored as -32768).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import neurokit2 as nk
import numpy as np
import wfdb

ECG_ADC_GAIN = 200.0        # adu per mV
PAW_ADC_GAIN = 100.0        # adu per cmH2O
FLOW_ADC_GAIN = 100.0       # adu per L/min
PPG_ADC_GAIN = 10.0         # adu per adu (PPG is already in arbitrary units)
ACC_ADC_GAIN = 1000.0       # adu per g


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


# PQRST waves of one beat: (offset from R in s at RR = 1 s, width s, MLII mV, V5 mV).
# P and T offsets scale with sqrt(RR) (Bazett-like) so fast rhythms do not overlap.
_ECG_WAVES = (
    (-0.20, 0.025, 0.12, 0.08),   # P
    (-0.03, 0.010, -0.12, -0.05),  # Q
    (0.00, 0.012, 1.00, 0.80),    # R
    (0.035, 0.012, -0.25, -0.12),  # S
    (0.28, 0.050, 0.30, 0.24),    # T
)


def ecg_synthesize(duration: float, sampling_rate: int, heart_rate: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Two-lead sinus-rhythm ECG (columns MLII, V5) in mV and its true mean heart rate (beats/min).

    Sum-of-Gaussians PQRST beats (the time-domain form of the ECGSYN morphology) placed at R times
    whose intervals follow ``60/heart_rate`` s with respiratory sinus arrhythmia (±2 %) and 1 %
    jitter. R amplitude ~0.9–1.3 mV on MLII, ~0.6–1.0 mV on V5; baseline wander and noise per lead.
    The returned rate is ``60 / mean(RR)`` of the simulated beats, i.e. the ground truth.
    """
    n = int(round(duration * sampling_rate))
    rr0 = 60.0 / heart_rate
    n_beats = int(duration / rr0) + 3
    k = np.arange(n_beats)
    rr = rr0 * (1 + 0.02 * np.sin(2 * np.pi * k / rng.uniform(3.5, 5.5) + rng.uniform(0, 6))
                + rng.normal(0, 0.01, n_beats))
    r_times = rng.uniform(0.05, rr0) + np.concatenate([[0.0], np.cumsum(rr[:-1])])
    r_times = r_times[r_times < duration]
    true_rate = 60.0 / float(np.mean(np.diff(r_times))) if len(r_times) > 1 else heart_rate
    scale = np.sqrt(rr[:len(r_times)])[:, None]
    w0 = int(0.35 * sampling_rate)
    window = np.arange(-w0, int(0.6 * sampling_rate))
    idx = np.round(r_times * sampling_rate).astype(int)[:, None] + window[None, :]
    dt_s = idx / sampling_rate - r_times[:, None]
    valid = (idx >= 0) & (idx < n)
    gains = (rng.uniform(0.9, 1.3), rng.uniform(0.75, 1.25))
    leads = []
    for lead in (0, 1):
        beat = np.zeros_like(dt_s)
        for offset, width, a2, a5 in _ECG_WAVES:
            centre = offset * scale if offset < -0.1 or offset > 0.1 else offset
            amp = a2 if lead == 0 else a5
            beat += amp * np.exp(-0.5 * ((dt_s - centre) / width) ** 2)
        sig = np.zeros(n)
        np.add.at(sig, idx[valid], gains[lead] * beat[valid])
        leads.append(sig)
    t = np.arange(n) / sampling_rate
    wander_f = rng.uniform(0.15, 0.35)
    leads[0] += 0.08 * np.sin(2 * np.pi * wander_f * t + rng.uniform(0, 6)) + rng.normal(0, 0.02, n)
    leads[1] += 0.05 * np.sin(2 * np.pi * wander_f * 0.8 * t) + rng.normal(0, 0.025, n)
    return np.column_stack(leads), true_rate


def ventilator_synthesize(duration: float, sampling_rate: int, *, rr_bpm: float,
                          tidal_volume_ml: float, peep_cmh2o: float, compliance_ml_cmh2o: float,
                          resistance_cmh2o_l_s: float, mode: str, rng: np.random.Generator
                          ) -> np.ndarray:
    """Airway pressure (cmH2O) and flow (L/min, + = inspiration), shape (n, 2), single-compartment lung.

    ``mode="volume"``: constant inspiratory flow delivering ``tidal_volume_ml``;
    ``mode="pressure"``: square pressure step sized so the breath reaches ``tidal_volume_ml``.
    Expiration is passive (time constant R*C) against PEEP. Inspiration takes 1/3 of each breath.
    Breath periods jitter by ±3 % around ``60/rr_bpm`` seconds.
    """
    n = int(round(duration * sampling_rate))
    c_l = compliance_ml_cmh2o / 1000.0          # L/cmH2O
    r = resistance_cmh2o_l_s                     # cmH2O/(L/s)
    tau = r * c_l                                # s
    vt_l = tidal_volume_ml / 1000.0
    paw = np.full(n, peep_cmh2o, dtype=float)
    flow = np.zeros(n, dtype=float)
    start = 0.0
    period0 = 60.0 / rr_bpm
    first_offset = rng.uniform(0, period0)
    t_all = np.arange(n) / sampling_rate
    start = first_offset - period0
    while start < duration:
        period = period0 * rng.uniform(0.97, 1.03)
        ti = period / 3.0
        in_breath = (t_all >= start) & (t_all < start + period)
        tb = t_all[in_breath] - start
        insp = tb < ti
        if mode == "volume":
            q = vt_l / ti                                   # L/s
            v = np.where(insp, q * tb, vt_l * np.exp(-(tb - ti) / tau))
            f = np.where(insp, q, -v / tau)
            p = np.where(insp, peep_cmh2o + r * q + v / c_l, peep_cmh2o)
        else:
            dp = vt_l / (c_l * (1 - np.exp(-ti / tau)))
            v_insp = c_l * dp * (1 - np.exp(-tb / tau))
            v_end = c_l * dp * (1 - np.exp(-ti / tau))
            v = np.where(insp, v_insp, v_end * np.exp(-(tb - ti) / tau))
            f = np.where(insp, (dp - v_insp / c_l) / r, -v / tau)
            p = np.where(insp, peep_cmh2o + dp, peep_cmh2o)
        paw[in_breath] = p
        flow[in_breath] = f * 60.0                          # L/s -> L/min
        start += period
    paw += rng.normal(0, 0.15, n)
    flow += rng.normal(0, 0.4, n)
    return np.column_stack([paw, flow])


def wearable_synthesize(duration: float, sampling_rate: int, *, resting_hr: float,
                        rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Wrist PPG (adu) and acceleration magnitude (g), shape (n, 2), plus activity bouts (start_s, end_s).

    Rest at ``resting_hr`` (beats/min); 1–3 walking bouts (30–90 s, ~1.8 steps/s) raise the
    heart rate by 20–35 beats/min and the acceleration magnitude oscillates around 1 g.
    """
    n = int(round(duration * sampling_rate))
    n_bouts = int(rng.integers(1, 4)) if duration >= 120 else 0
    bouts: list[tuple[float, float]] = []
    if n_bouts:
        edges = np.linspace(0, duration, n_bouts + 1)
        for k in range(n_bouts):
            length = rng.uniform(30, 90)
            lo, hi = edges[k] + 20, edges[k + 1] - length - 20
            if hi > lo:
                s0 = rng.uniform(lo, hi)
                bouts.append((round(s0, 2), round(s0 + length, 2)))
    # one rest and one activity PPG (NeuroKit2), spliced at the bout edges
    rest = np.asarray(nk.ppg_simulate(duration=max(duration, 4.0), sampling_rate=sampling_rate,
                                      heart_rate=resting_hr, motion_amplitude=0.05,
                                      powerline_amplitude=0.0, random_state=_seed(rng)))[:n]
    ppg = rest.astype(float).copy()
    if bouts:
        total = sum(b1 - b0 for b0, b1 in bouts) + 1.0
        active = np.asarray(nk.ppg_simulate(duration=max(total, 4.0), sampling_rate=sampling_rate,
                                            heart_rate=resting_hr + rng.uniform(20, 35),
                                            motion_amplitude=0.3, powerline_amplitude=0.0,
                                            random_state=_seed(rng)), dtype=float)
        used = 0
        for b0, b1 in bouts:
            i0, i1 = int(round(b0 * sampling_rate)), int(round(b1 * sampling_rate))
            ppg[i0:i1] = active[used:used + (i1 - i0)]
            used += i1 - i0
    ppg = 1500.0 + 400.0 * (ppg - ppg.mean()) / max(ppg.std(), 1e-6)
    t = np.arange(n) / sampling_rate
    acc = 1.0 + rng.normal(0, 0.01, n)
    for s0, s1 in bouts:
        m = (t >= s0) & (t < s1)
        cadence = rng.uniform(1.6, 2.0)
        acc[m] += 0.35 * np.abs(np.sin(np.pi * cadence * t[m])) + rng.normal(0, 0.05, m.sum())
    return np.column_stack([ppg, acc]), bouts


SIGNALS = {
    "ecg_monitor": (["MLII", "V5"], ["mV", "mV"], [ECG_ADC_GAIN, ECG_ADC_GAIN]),
    "ventilator": (["Paw", "Flow"], ["cmH2O", "L/min"], [PAW_ADC_GAIN, FLOW_ADC_GAIN]),
    "wearable": (["PPG", "ACC"], ["adu", "g"], [PPG_ADC_GAIN, ACC_ADC_GAIN]),
}


def waveform_write(record_name: str, device_kind: str, signal: np.ndarray, sampling_rate: int,
                   start: dt.datetime, comments: list[str], write_dir: Path) -> None:
    """Write ``signal`` (physical units; NaN = invalid) as a format-16 WFDB record in ``write_dir``.

    ``start`` becomes the header's base_date/base_time (local time of the recording start).
    """
    names, units, gains = SIGNALS[device_kind]
    gains_arr = np.asarray(gains, dtype=float)
    limit = 32767 / gains_arr
    clipped = np.clip(signal, -limit, limit)  # keep values in the 16-bit range (NaN stays NaN)
    digital = np.round(clipped * gains_arr)
    digital = np.where(np.isnan(digital), -32768, digital).astype(np.int16)
    write_dir.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(record_name, fs=sampling_rate, units=list(units), sig_name=list(names),
                d_signal=digital, fmt=["16"] * len(names), adc_gain=list(gains_arr),
                baseline=[0] * len(names), comments=comments, base_date=start.date(),
                base_time=start.time(), write_dir=str(write_dir))
