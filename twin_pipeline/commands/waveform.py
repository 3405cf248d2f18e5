"""Waveform debugging commands for data teams.

`twin-pipeline ecg-peaks RECORD --out FILE [--method twin|neurokit]`: R-peak sample indices, one per
line, in the record's sampling rate (RECORD = WFDB record path without extension).
`twin-pipeline waveform-features RECORD [--device-kind K]`: the record's feature set as JSON (a
WFDB record, or a Puritan Bennett 840 text export for the ventilator kind).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def cmd_ecg_peaks(args: argparse.Namespace) -> int:
    import numpy as np

    from twin_pipeline.lib.ecg import ecg_peaks, ecg_peaks_leads
    from twin_pipeline.lib.waveform import ecg_leads
    from twin_pipeline.sources.wfdb_io import WaveformReadError, read_record

    try:
        rec = read_record(args.record, resample_to="fastest")
    except WaveformReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    leads = list(ecg_leads(rec).values())
    if not leads:
        print(f"error: record {args.record} has no ECG channel (channels: {rec.sig_names})", file=sys.stderr)
        return 1
    if args.method == "twin":
        peaks = ecg_peaks_leads(leads[:2], rec.sampling_rate)
    else:
        peaks = ecg_peaks(leads[0], rec.sampling_rate, method=args.method)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{int(p)}\n" for p in np.asarray(peaks)))
    print(f"{len(peaks)} R-peaks at {rec.sampling_rate:g} Hz from {min(len(leads), 2 if args.method == 'twin' else 1)}"
          f" lead(s) written to {out}", file=sys.stderr)
    return 0


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return _json_safe(value.item())
    return value


def cmd_waveform_features(args: argparse.Namespace) -> int:
    from twin_pipeline.lib.waveform import (DEVICE_KINDS, infer_device_kind, is_pb840_export, pb840_features,
                                            record_features)
    from twin_pipeline.sources.wfdb_io import WaveformReadError, read_record

    kind = args.device_kind
    try:
        if is_pb840_export(args.record):
            if kind not in (None, "ventilator"):
                print(f"error: {args.record} is a PB-840 export: device kind must be ventilator", file=sys.stderr)
                return 1
            kind, feats = "ventilator", pb840_features(args.record)
        else:
            if kind is None:
                kind = infer_device_kind(read_record(args.record, resample_to="fastest"))
            if kind not in DEVICE_KINDS:
                print(f"error: unknown device kind {kind!r}; expected one of {DEVICE_KINDS}", file=sys.stderr)
                return 1
            feats = record_features(args.record, kind)
    except WaveformReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"device_kind": kind, **{k: _json_safe(v) for k, v in feats.items()}}, indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("ecg-peaks", help="write a record's R-peak sample indices, one per line")
    p.add_argument("record", help="WFDB record path without extension")
    p.add_argument("--out", required=True, help="output text file")
    p.add_argument("--method", default="twin",
                   help="twin (both leads, this package's kernel) or a neurokit2 method on the first lead")
    p.set_defaults(func=cmd_ecg_peaks)
    w = sub.add_parser("waveform-features", help="print a record's waveform features as JSON")
    w.add_argument("record", help="WFDB record path without extension, or a PB-840 text export")
    w.add_argument("--device-kind", default=None, choices=["ecg_monitor", "ventilator", "wearable"],
                   help="default: inferred from the channel names")
    w.set_defaults(func=cmd_waveform_features)
