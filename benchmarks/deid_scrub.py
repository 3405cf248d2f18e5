"""Free-text scrubbing benchmark: recall / precision of `scrub_text` on labelled generated notes, and throughput.

    .venv/bin/python benchmarks/deid_scrub.py [--notes 500] [--repeats 5]

Notes come from the labelled generator of `twin_pipeline_tests/lib/test_deid.py` (seeded Faker: the
patient's name with Synthea trailing digits, MRN, phone, SSN, street address as structured "known"
identifiers; relatives, providers, dates in 15 formats, pharmacy phones, e-mails, URLs, IPs, licence
numbers, ages over 89 found by patterns and the names dictionary only). A planted identifier counts
as found when every letter/digit of it lies inside a detected span; precision counts detected spans
that overlap no planted identifier as false. Reference columns, same notes, same run:
``patterns+dictionary`` (no known identifiers: what a scrubber without the structured data can do).
Presidio was the candidate library; its NLP engine needs a spaCy model download, so it is not run here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin_pipeline.lib.deid import Scrubber, find_phi_spans, scrub_text  # noqa: E402
from twin_pipeline_tests.lib.test_deid import _covered, generate_note  # noqa: E402


def evaluate(notes, use_known: bool) -> tuple[dict[str, list[bool]], int, int]:
    found: dict[str, list[bool]] = defaultdict(list)
    tp = fp = 0
    for note in notes:
        spans = find_phi_spans(note.text, note.known if use_known else ())
        for p in note.planted:
            label = f"{p.kind} (known)" if p.known else p.kind
            found[label].append(_covered(spans, p.start, p.end, note.text))
        for sp in spans:
            if any(sp.start < p.end and p.start < sp.end for p in note.planted):
                tp += 1
            else:
                fp += 1
    return found, tp, fp


def throughput(notes, repeats: int) -> tuple[float, float]:
    """Median notes/s of scrub_text (known identifiers prepared per note) and of a prepared Scrubber."""
    per_note, prepared = [], []
    scrubbers = [Scrubber(n.known) for n in notes]
    for _ in range(repeats):
        t = time.perf_counter()
        for n in notes:
            scrub_text(n.text, n.known)
        per_note.append(len(notes) / (time.perf_counter() - t))
        t = time.perf_counter()
        for n, s in zip(notes, scrubbers, strict=True):
            s(n.text)
        prepared.append(len(notes) / (time.perf_counter() - t))
    return statistics.median(per_note), statistics.median(prepared)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=10_000, help="first note seed (the test uses seeds 0..299)")
    args = ap.parse_args()
    notes = [generate_note(args.seed + i) for i in range(args.notes)]
    full, tp_f, fp_f = evaluate(notes, use_known=True)
    pat, tp_p, fp_p = evaluate(notes, use_known=False)
    print(f"scrub_text on {len(notes)} generated notes (seeds {args.seed}..{args.seed + len(notes) - 1}), "
          f"{sum(len(n.planted) for n in notes)} planted identifiers\n")
    print(f"| kind | n | recall: scrub_text (known + patterns + dictionary) | recall: patterns + dictionary only |")
    print("|---|---:|---:|---:|")
    for k in sorted(full):
        print(f"| {k} | {len(full[k])} | {np.mean(full[k]):.3f} | {np.mean(pat[k]):.3f} |")
    all_f = [x for v in full.values() for x in v]
    all_p = [x for v in pat.values() for x in v]
    print(f"| **overall** | {len(all_f)} | **{np.mean(all_f):.3f}** | {np.mean(all_p):.3f} |")
    print(f"| precision (spans) | | **{tp_f / (tp_f + fp_f):.3f}** ({fp_f} false of {tp_f + fp_f}) | "
          f"{tp_p / (tp_p + fp_p):.3f} ({fp_p} false of {tp_p + fp_p}) |")
    per_note, prepared = throughput(notes, args.repeats)
    mean_chars = statistics.mean(len(n.text) for n in notes)
    print(f"\nthroughput (median of {args.repeats}, mean note {mean_chars:.0f} chars): "
          f"scrub_text {per_note:,.0f} notes/s; prepared Scrubber {prepared:,.0f} notes/s")


if __name__ == "__main__":
    main()
