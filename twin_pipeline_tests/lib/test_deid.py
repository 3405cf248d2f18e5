"""Tests for twin_pipeline.lib.deid: pseudonyms, date shifts, Safe Harbor fields, text scrubbing."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from faker import Faker
from scipy import stats

from twin_pipeline.lib import deid
from twin_pipeline.lib.deid import (
    AGE_BANDS,
    DeidKey,
    age_band,
    age_years,
    date_shift_days,
    date_shift_series,
    deidentify_wfdb_comments,
    find_identifier_hits,
    find_phi_spans,
    load_restricted_zip3,
    pseudonym,
    pseudonymize_series,
    safe_age,
    safe_birth_year,
    scrub_series,
    scrub_text,
    shift_dates,
    zip3,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SECRET = "test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def key() -> DeidKey:
    return DeidKey.from_secret(SECRET)


# --------------------------------------------------------------------------------------------------
# DeidKey and pseudonyms
# --------------------------------------------------------------------------------------------------


def test_key_rejects_empty_and_short_secrets():
    for bad in ["", "   ", "short", "x" * 15]:
        with pytest.raises(ValueError):
            DeidKey.from_secret(bad)
    with pytest.raises(ValueError):
        DeidKey(secret=b"x" * 8)
    with pytest.raises(ValueError):
        DeidKey.from_secret(SECRET, max_shift_days=0)
    assert DeidKey.from_secret("x" * 16).max_shift_days == 180


def test_key_repr_and_str_hide_the_secret(key):
    for text in (repr(key), str(key), f"{key}", repr([key]), str({"k": key})):
        assert SECRET not in text
        assert SECRET.encode() not in text.encode()
        assert "hidden" in text
    assert "max_shift_days=180" in repr(key)


def test_pseudonym_shape_and_kind_prefix(key):
    for kind, letter in deid.KIND_PREFIX.items():
        p = pseudonym(key, "site_a", "123", kind)
        assert re.fullmatch(rf"{letter}[0-9a-f]{{16}}", p)
    assert set(deid.KIND_PREFIX.values()) == {"P", "E", "R", "D", "I"}
    with pytest.raises(ValueError):
        pseudonym(key, "site_a", "123", "patient")
    with pytest.raises(ValueError):
        pseudonym(key, "site_a", "   ")


def test_pseudonym_is_stable_and_separates_inputs(key):
    p = pseudonym(key, "site_a", "593aaa05-d864")
    assert p == pseudonym(key, "site_a", "593aaa05-d864")
    assert p == pseudonym(DeidKey.from_secret(SECRET), "site_a", "593aaa05-d864")
    assert p != pseudonym(key, "site_b", "593aaa05-d864")
    assert p != pseudonym(key, "site_a", "593aaa05-d865")
    assert p[1:] != pseudonym(key, "site_a", "593aaa05-d864", "encounter")[1:]
    assert p != pseudonym(DeidKey.from_secret(SECRET + "!"), "site_a", "593aaa05-d864")


def test_pseudonym_has_no_separator_ambiguity(key):
    assert pseudonym(key, "a|b", "c") != pseudonym(key, "a", "b|c")
    assert pseudonym(key, "ab", "c") != pseudonym(key, "a", "bc")
    assert pseudonym(key, "a\x00b", "c") != pseudonym(key, "a", "b\x00c")
    # kind and site are separated too: the hex part differs when text moves between fields
    assert pseudonym(key, "", "xy")[1:] != pseudonym(key, "x", "y")[1:]


def test_pseudonymize_series_matches_scalar_and_keeps_missing(key):
    s = pd.Series(["a", None, "b", "a", np.nan], index=[10, 11, 12, 13, 14])
    out = pseudonymize_series(key, "site_a", s, "record")
    assert list(out.index) == [10, 11, 12, 13, 14]
    assert out[10] == out[13] == pseudonym(key, "site_a", "a", "record")
    assert out[12] == pseudonym(key, "site_a", "b", "record")
    assert out[10] != out[12]
    assert out[[11, 14]].isna().all()
    # CSV readers turn integer ids with gaps into floats: 7.0 is id "7"
    ints = pseudonymize_series(key, "site_a", pd.Series([7.0, np.nan]), "person")
    assert ints[0] == pseudonym(key, "site_a", "7")


# --------------------------------------------------------------------------------------------------
# Date shifts
# --------------------------------------------------------------------------------------------------


def test_date_shift_range_sign_and_uniformity(key):
    n = key.max_shift_days
    shifts = np.array([date_shift_days(key, "site_a", f"patient-{i}") for i in range(20_000)])
    assert shifts.min() >= -n and shifts.max() <= n
    assert not (shifts == 0).any()
    # uniform over the 2N allowed values (chi-square), symmetric around 0
    counts = np.bincount(np.where(shifts < 0, shifts + n, shifts + n - 1), minlength=2 * n)
    assert len(counts) == 2 * n
    assert stats.chisquare(counts).pvalue > 1e-4
    assert abs((shifts < 0).mean() - 0.5) < 0.02
    # 1000 patients: distinct shifts at the birthday-problem rate (2N = 360 values)
    first = shifts[:1000]
    m = 2 * n
    expected = m * (1 - (1 - 1 / m) ** 1000)
    assert abs(len(np.unique(first)) - expected) < 25
    # with a wide range, collisions are rare: > 90 % of 1000 patients have a shift of their own
    wide = DeidKey.from_secret(SECRET, max_shift_days=100_000)
    wide_shifts = [date_shift_days(wide, "site_a", f"patient-{i}") for i in range(1000)]
    assert len(set(wide_shifts)) > 900


def test_date_shift_is_keyed_per_site_and_secret(key):
    ids = [f"p{i}" for i in range(200)]
    a = [date_shift_days(key, "site_a", i) for i in ids]
    assert a == [date_shift_days(key, "site_a", i) for i in ids]
    assert np.mean(np.array(a) == np.array([date_shift_days(key, "site_b", i) for i in ids])) < 0.05
    other = DeidKey.from_secret(SECRET + "x")
    assert np.mean(np.array(a) == np.array([date_shift_days(other, "site_a", i) for i in ids])) < 0.05
    small = DeidKey.from_secret(SECRET, max_shift_days=3)
    assert {date_shift_days(small, "s", i) for i in ids} == {-3, -2, -1, 1, 2, 3}


def test_date_shift_series_and_shift_dates_per_row(key):
    pids = pd.Series(["p1", "p2", None, "p1"], index=[5, 6, 7, 8])
    days = date_shift_series(key, "site_a", pids)
    assert str(days.dtype) == "Int64"
    assert days[5] == days[8] == date_shift_days(key, "site_a", "p1")
    assert pd.isna(days[7])
    ts = pd.Series(pd.to_datetime(["2024-01-31 10:00", "2024-02-29", "2024-03-01", "2024-12-31 23:59"], format="ISO8601"), index=pids.index)
    out = shift_dates(ts, days)
    assert out[5] == ts[5] + pd.Timedelta(days=int(days[5]))
    assert out[6] == ts[6] + pd.Timedelta(days=int(days[6]))
    assert out[8] - out[5] == ts[8] - ts[5]  # same patient: interval kept exactly
    assert pd.isna(out[7])  # no shift known -> never released unshifted
    with_nat = shift_dates(pd.Series(pd.to_datetime(["2024-01-01", None])), 5)
    assert with_nat[0] == pd.Timestamp("2024-01-06") and pd.isna(with_nat[1])


def test_shift_dates_checks_inputs():
    ts = pd.Series(pd.to_datetime(["2024-01-01", "2024-06-30"]).tz_localize("UTC"))
    out = shift_dates(ts, -7)
    assert list(out) == list(ts - pd.Timedelta(days=7))
    assert str(out.dt.tz) == "UTC"
    with pytest.raises(TypeError):
        shift_dates(pd.Series(["2024-01-01"]), 3)
    with pytest.raises(ValueError):
        shift_dates(ts, pd.Series([1.5, 2.0]))
    with pytest.raises(ValueError):
        shift_dates(ts, pd.Series([1, 2], index=[7, 8]))


# --------------------------------------------------------------------------------------------------
# Safe Harbor: ages, birth years, ZIP
# --------------------------------------------------------------------------------------------------


def test_age_years_is_exact_on_birthdays():
    birth = pd.Series(pd.to_datetime(["1934-03-01", "1934-03-01", "2000-02-29", "2000-02-29", "1990-06-15", None]))
    at = pd.Series(pd.to_datetime(["2024-03-01", "2024-02-29", "2001-02-28", "2001-03-01", "1980-01-01", "2024-01-01"]))
    age = age_years(birth, at)
    assert age[0] == 90.0
    assert 89.99 < age[1] < 90.0
    assert 0.99 < age[2] < 1.0  # Feb 29 birthday counts on Mar 1 in common years
    assert age[3] == 1.0
    assert np.isnan(age[4])  # before birth: a data error, not an age
    assert np.isnan(age[5])
    scalar = age_years(birth[:1], pd.Timestamp("2024-09-01"))
    assert 90.4 < scalar[0] < 90.6


def test_safe_age_and_bands_at_the_90_boundary():
    age = pd.Series([0.0, 4.99, 5.0, 17.5, 89.9, 89.999, 90.0, 104.2, np.nan, -1.0])
    assert list(safe_age(age)[:8]) == [0.0, 4.0, 5.0, 17.0, 89.0, 89.0, 90.0, 90.0]
    assert np.isnan(safe_age(age)[8])
    bands = age_band(age)
    assert list(bands[:8]) == ["0-4", "0-4", "5-9", "15-19", "85-89", "85-89", "90+", "90+"]
    assert pd.isna(bands[8]) and pd.isna(bands[9])
    assert AGE_BANDS[0] == "0-4" and AGE_BANDS[-2] == "85-89" and AGE_BANDS[-1] == "90+"
    assert len(AGE_BANDS) == 19


def test_safe_birth_year_suppresses_over_89():
    birth = pd.Series(pd.to_datetime(["1934-03-01", "1934-03-02", "1980-07-04", None]))
    out = safe_birth_year(birth, pd.Timestamp("2024-03-01"))
    assert str(out.dtype) == "Int64"
    assert pd.isna(out[0])  # 90 today
    assert out[1] == 1934  # 89 until tomorrow
    assert out[2] == 1980
    assert pd.isna(out[3])


def test_zip3_restricted_missing_and_malformed():
    restricted = {"036", "059", "102"}
    s = pd.Series(["93291", "03601", "93291-1234", "932911234", None, "9329", "ABCDE", "10212", 2134, 93291.0, " 90804 "])
    assert list(zip3(s, restricted)) == ["932", "000", "932", "932", "000", "000", "000", "000", "021", "932", "908"]


def test_load_restricted_zip3_real_file_and_bad_file(tmp_path):
    codes = load_restricted_zip3(PROJECT_ROOT / "data" / "vocab" / "restricted_zip3.csv")
    assert {"036", "059", "102", "893"} <= codes
    assert all(re.fullmatch(r"\d{3}", c) for c in codes)
    assert len(codes) == 17
    bad = tmp_path / "zips.csv"
    bad.write_text("zip3,note\n036,\n36,\n")
    with pytest.raises(ValueError, match="zips.csv"):
        load_restricted_zip3(bad)


# --------------------------------------------------------------------------------------------------
# Free text: a labelled note generator
# --------------------------------------------------------------------------------------------------

FILLER = [
    "Patient reports improving dyspnea and fatigue.",
    "Will follow up in 2 weeks with repeat labs.",
    "May need dose adjustment if eGFR falls below 45.",
    "Mark the site before the procedure.",
    "Hope is that symptoms resolve with rest.",
    "Grant funding covers the study visit.",
    "Wells score 4, Foley catheter in place.",
    "Baker's cyst on the left, Murphy sign negative.",
    "BP 128/82, HR 88, SpO2 94% on 2L NC, Temp 38.2 C.",
    "Lisinopril 10 MG Oral Tablet daily; metformin 500 mg BID.",
    "HbA1c 7.2%, troponin 0.04 ng/mL, LDL 130 mg/dL.",
    "History of Parkinson's disease and Hodgkin lymphoma in remission.",
    "Tanner stage 3, Glasgow Coma Scale 15, NYHA class II.",
    "Heparin 5000 units SC q8h; penicillin G 2400000 units IM once.",
    "HIV viral load 1200000 copies/mL at diagnosis.",
    "Chest X-Ray shows no consolidation.",
    "Brown sputum, no hemoptysis.",
    "Wilson disease and Graves disease were ruled out.",
    "Bell palsy resolved; Allen test normal.",
    "Child-Pugh class B; MELD 14.",
    "Patient is a 67-year-old with COPD, aged 67 at onset.",
    "ICD-10 E11.9; LOINC 2345-7 glucose 142 mg/dL.",
    "Stage 2 hypertension; continue amlodipine 5 mg.",
    "ECG: sinus rhythm at 72 bpm, QTc 440 ms, first degree AV block.",
    "Morning stiffness lasting 45 minutes, symmetric small joint pain.",
    "Mini-Cog 3/5; PHQ-9 score 12; GAD-7 score 8.",
    "Walked 300 meters in 6 minutes with one rest.",
    "Ventilator: PEEP 8, FiO2 0.40, tidal volume 450 mL.",
    "Grace score 120; Young Mania Rating Scale not indicated.",
    "Fall risk: Morse Fall Scale 45.",
    "Discussed diet, exercise and smoking cessation.",
    "Plan: CBC, BMP and chest CT in 3 months.",
    "The patient will return if fever exceeds 38.5 C.",
    "Faith-based support declined; Joy of living questionnaire done.",
    "Lives with family; independent in ADLs.",
]


@dataclass
class Planted:
    start: int
    end: int
    kind: str
    known: bool


@dataclass
class Note:
    text: str
    known: list[str]
    planted: list[Planted]


def _synthea_name(fake: Faker, rng: random.Random, first: bool) -> str:
    name = fake.first_name() if first else fake.last_name()
    return name + str(rng.randint(10, 999)) if rng.random() < 0.5 else name


def _phone_variants(rng: random.Random) -> str:
    a, b, c = rng.randint(200, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([
        f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
        f"{a}{b}{c:04d}", f"1-{a}-{b}-{c:04d}", f"({a}){b}-{c:04d}x{rng.randint(10, 999)}",
    ])


def _date_variants(fake: Faker, rng: random.Random) -> str:
    d = fake.date_between(start_date="-30y", end_date="today")
    fmt = rng.choice([
        "%Y-%m-%d", "%m/%d/%Y", "{d} %B %Y", "%B {d}, %Y", "%b {d}, %Y", "%d-%b-%Y", "%m/%d/%y",
        "%B {d}", "{d} %b", "%b. {d}, %Y", "%B %Y", "%Y-%m-%dT%H:%M:%SZ", "%d.%m.%Y", "{d}th of %B %Y",
        "{m}/{d}",
    ])
    return d.strftime(fmt.replace("{d}", str(d.day)).replace("{m}", str(d.month)))


def generate_note(seed: int) -> Note:
    """One clinical note with planted identifiers and their character ranges.

    Identifiers of the patient (name, MRN, phone, SSN, street address) are also returned as the
    structured 'known' identifiers; relatives, providers, dates, e-mails, URLs and other numbers are
    found by patterns and the names dictionary only.
    """
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    other = Faker("de_DE")
    other.seed_instance(seed)

    first = _synthea_name(fake, rng, True)
    last = _synthea_name(fake, rng, False)
    first_plain = re.sub(r"\d+$", "", first)
    last_plain = re.sub(r"\d+$", "", last)
    mrn = str(rng.randint(10**6, 10**9))
    phone = f"{rng.randint(200, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
    ssn = fake.ssn()
    street = fake.street_address()
    known = [first, last, mrn, phone, ssn, street]

    segs: list[tuple[str, str | None, bool]] = []

    def add(text: str, kind: str | None = None, is_known: bool = False) -> None:
        segs.append((text, kind, is_known))

    def filler(k: int = 1) -> None:
        for _ in range(k):
            add(" " + rng.choice(FILLER) + " ")

    name_forms = [
        lambda: [("Patient ", None), (first_plain, "name"), (" ", None), (last_plain, "name"), (".", None)],
        lambda: [("Mr./Ms. ", None), (last_plain, "name"), (" seen today.", None)],
        lambda: [(first_plain.upper(), "name"), (" ", None), (last_plain.upper(), "name"), (" presented.", None)],
        lambda: [(last_plain, "name"), ("'s daughter called.", None)],
        lambda: [("Spoke with ", None), (first, "name"), (" ", None), (last, "name"), (".", None)],
        lambda: [("pt ", None), (first_plain.lower(), "name"), (" ok.", None)],
    ]
    for text, kind in rng.choice(name_forms)():
        add(text, kind, kind is not None)
    filler(2)
    add(rng.choice(["MRN: ", "MRN ", "Medical record number ", "chart # ", "MRN#"]))
    add(mrn, "mrn", True)
    add(". ")
    filler(1)
    add("Phone ")
    add(rng.choice([phone, phone.replace("-", "."), "(" + phone[:3] + ") " + phone[4:], phone.replace("-", "")]),
        "phone", True)
    add("; pharmacy ")
    add(_phone_variants(rng), "phone")
    add(". ")
    filler(2)
    add(rng.choice(["SSN ", "Social security number: ", "ss: "]))
    add(ssn if rng.random() < 0.7 else ssn.replace("-", ""), "ssn", True)
    add(". Address: ")
    city_part = f", {fake.city()}, {fake.state_abbr()} {fake.postcode()}" if rng.random() < 0.5 else ""
    add(street + city_part, "address", True)
    add(". ")
    filler(1)
    for _ in range(rng.randint(1, 3)):
        add(rng.choice(["Seen on ", "Admitted ", "Last visit ", "Surgery on "]))
        add(_date_variants(fake, rng), "date")
        add(". ")
        filler(1)
    rel = rng.choice(["daughter", "son", "wife", "husband", "sister", "brother", "neighbor", "caregiver"])
    if rng.random() < 0.1:
        rel_first, rel_last, rel_kind = other.first_name(), other.last_name(), "name_other_locale"
    else:
        rel_first, rel_last, rel_kind = fake.first_name(), fake.last_name(), "relative"
    rel_form = rng.randrange(6)
    if rel_form == 0:
        add(f"Accompanied by {rel} ")
        add(rel_first, rel_kind)
        add(" ")
        add(rel_last, rel_kind)
        add(". ")
    elif rel_form == 1:
        add(f"Her {rel}, ")
        add(rel_first, rel_kind)
        add(", will drive her home. ")
    elif rel_form == 2:
        add("Called ")
        add(rel_first, rel_kind)
        add(" ")
        add(rel_last, rel_kind)
        add(f" ({rel}) at ")
        add(_phone_variants(rng), "phone")
        add(". ")
    elif rel_form == 3:  # no cue before the name
        add(" ")
        add(rel_first, rel_kind)
        add(" ")
        add(rel_last, rel_kind)
        add(f" ({rel}) phoned with questions. ")
    elif rel_form == 4:  # first name only
        add("Message left for ")
        add(rel_first, rel_kind)
        add(". ")
    else:  # no context at all: only the names dictionary can find it
        add(" ")
        add(rel_first, rel_kind)
        add(" ")
        add(rel_last, rel_kind)
        add(" brought the medication list. ")
    filler(1)
    add("Reviewed by Dr. ")
    add(fake.last_name(), "provider")
    add(". ")
    if rng.random() < 0.6:
        add("Contact: ")
        add(fake.email(), "email")
        add(". ")
    if rng.random() < 0.4:
        add("Portal ")
        add(rng.choice([fake.url(), fake.uri()]), "url")
        add(" . ")
    if rng.random() < 0.3:
        add("Device IP ")
        add(fake.ipv4_private(), "ip")
        add(". ")
    if rng.random() < 0.3:
        add("Driver's license: ")
        add(fake.bothify("?########").upper(), "id")
        add(". ")
    if rng.random() < 0.3:
        add("Patient is a ")
        add(str(rng.randint(90, 104)), "age90")
        add("-year-old. ")
    filler(2)

    text, planted, pos = [], [], 0
    for seg, kind, is_known in segs:
        if kind is not None:
            planted.append(Planted(pos, pos + len(seg), kind, is_known))
        text.append(seg)
        pos += len(seg)
    return Note("".join(text), known, planted)


@pytest.fixture(scope="module")
def labelled_notes() -> list[Note]:
    return [generate_note(seed) for seed in range(300)]


def _covered(spans: list[deid.PhiSpan], start: int, end: int, text: str) -> bool:
    """Every letter/digit of text[start:end] lies inside a detected span."""
    mask = np.zeros(end - start, dtype=bool)
    for sp in spans:
        lo, hi = max(sp.start, start), min(sp.end, end)
        if lo < hi:
            mask[lo - start:hi - start] = True
    alnum = np.array([c.isalnum() for c in text[start:end]])
    return bool(mask[alnum].all())


def test_scrub_text_recall_and_precision_on_labelled_notes(labelled_notes, capsys):
    found: dict[str, list[bool]] = {}
    tp_spans = fp_spans = 0
    filler_chars = filler_removed = 0
    fp_examples: list[str] = []
    for note in labelled_notes:
        spans = find_phi_spans(note.text, note.known)
        for p in note.planted:
            label = f"{p.kind} (known)" if p.known else p.kind
            found.setdefault(label, []).append(_covered(spans, p.start, p.end, note.text))
        for sp in spans:
            if any(sp.start < p.end and p.start < sp.end for p in note.planted):
                tp_spans += 1
            else:
                fp_spans += 1
                fp_examples.append(note.text[sp.start:sp.end])
        planted_mask = np.zeros(len(note.text), dtype=bool)
        for p in note.planted:
            planted_mask[p.start:p.end] = True
        span_mask = np.zeros(len(note.text), dtype=bool)
        for sp in spans:
            span_mask[sp.start:sp.end] = True
        filler_chars += int((~planted_mask).sum())
        filler_removed += int((span_mask & ~planted_mask).sum())
        # the scrubbed note keeps none of the known identifiers' digits or name tokens
        assert find_identifier_hits(scrub_text(note.text, note.known), note.known) == []

    recall = {k: float(np.mean(v)) for k, v in sorted(found.items())}
    all_hits = [x for v in found.values() for x in v]
    known_hits = [x for k, v in found.items() if k.endswith("(known)") for x in v]
    overall = float(np.mean(all_hits))
    known_recall = float(np.mean(known_hits))
    precision = tp_spans / (tp_spans + fp_spans)
    with capsys.disabled():
        print(f"\nscrub_text on {len(labelled_notes)} generated notes")
        print(f"{'kind':<26}{'n':>6}{'recall':>9}")
        for k, r in recall.items():
            print(f"{k:<26}{len(found[k]):>6}{r:>9.3f}")
        print(f"{'known kinds':<26}{len(known_hits):>6}{known_recall:>9.3f}")
        print(f"{'overall':<26}{len(all_hits):>6}{overall:>9.3f}")
        print(f"precision (spans) {precision:.3f}  ({tp_spans} true, {fp_spans} false)")
        print(f"filler characters removed {filler_removed / filler_chars:.4f}")
        print(f"false-positive spans (distinct): {sorted(set(fp_examples))[:15]}")
    assert known_recall >= 0.98
    for k, r in recall.items():
        if k.endswith("(known)"):
            assert r >= 0.98, k
    assert overall >= 0.9
    assert precision >= 0.9


def test_scrub_text_examples():
    text = (
        "Jorge Luis88 Vela532 (MRN: 12345678) seen 03/01/2024 with daughter Maria Lopez, "
        "ph (555) 123-4567. SSN 999-75-6624. Lives at 568 Hills Branch Unit 86, Visalia, CA 93291. "
        "Will follow up March 1, 2024. Dr. Xyzzy reviewed. 92-year-old. https://portal.example.org/p/1 "
        "IP 10.0.0.1. Wells score 4. BP 120/80, HR 88, 500 mg. Passport X12345678X, MRN123456."
    )
    known = ["Jorge Luis88", "Vela532", "12345678", "555-123-4567", "568 Hills Branch Unit 86", "999-75-6624"]
    out = scrub_text(text, known)
    for leaked in ["Jorge", "Luis", "Vela", "12345678", "Maria", "Lopez", "123-4567", "6624", "Hills",
                   "Visalia", "93291", "03/01", "March 1", "Xyzzy", "92", "example.org", "10.0.0.1",
                   "X12345678X", "123456"]:
        assert leaked not in out, leaked
    for kept in ["Will follow up", "Wells score 4", "BP 120/80, HR 88, 500 mg", "daughter", "Dr.", " [AGE90+]-year-old"]:
        assert kept in out, kept
    for tag in ["[NAME]", "[MRN]", "[DATE]", "[PHONE]", "[SSN]", "[ADDRESS]", "[URL]", "[IP]", "[ID]", "[AGE90+]"]:
        assert tag in out, tag
    assert scrub_text(None) is None
    assert scrub_text("") == ""
    with pytest.raises(TypeError):
        scrub_text(12345)  # type: ignore[arg-type]


def test_scrub_text_known_names_case_insensitive_and_ambiguous_words():
    out = scrub_text("GRANT was here; grant's mother Hope; the grant was approved.", ["Grant Hope"])
    assert "grant" not in out.lower() and "hope" not in out.lower()
    # without the patient's name, the common words stay; next to a real name they go
    assert scrub_text("Will follow up. May return. Mark the site.") == "Will follow up. May return. Mark the site."
    assert scrub_text("Seen with Will Smith today.") == "Seen with [NAME] [NAME] today."
    assert scrub_text("Her son Will drove.") == "Her son [NAME] drove."
    assert scrub_text("Mrs. Grace Xylophone called.") == "Mrs. [NAME] [NAME] called."
    assert scrub_text("wife named Zyphora visited") == "wife named [NAME] visited"


def test_scrub_text_is_idempotent_on_labelled_notes(labelled_notes):
    for note in labelled_notes[:50]:
        once = scrub_text(note.text, note.known)
        assert scrub_text(once, note.known) == once
        assert scrub_text(once) == once


def test_scrub_text_leaves_real_wfdb_comments_alone():
    """MIT-BIH header comments (real, no PHI): medications, rhythms, ages <= 89 survive scrubbing."""
    lines = []
    for hea in sorted((SHARED_DATA / "ecg" / "mitdb").glob("*.hea")):
        lines += [ln[1:].strip() for ln in hea.read_text().splitlines() if ln.startswith("#")]
    if not lines:
        pytest.skip("shared MIT-BIH headers not available")
    changed = [ln for ln in lines if scrub_text(ln) != ln]
    assert len(lines) > 40
    assert changed == []


def test_scrub_series_per_row_known_identifiers_and_missing():
    texts = pd.Series(["Ana Vela called 555-123-4567", None, "Ana Vela called 555-123-4567", np.nan], index=[3, 4, 5, 6])
    known = pd.Series([["Ana", "Vela", "555-123-4567"], None, "Zed", None], index=[3, 4, 5, 6])
    out = scrub_series(texts, known)
    assert list(out.index) == [3, 4, 5, 6]
    assert out[3] == "[NAME] [NAME] called [PHONE]"
    assert out[4] is None and pd.isna(out[6])
    assert "[PHONE]" in out[5]  # pattern-based hit even without known identifiers
    with pytest.raises(ValueError):
        scrub_series(texts, known.reset_index(drop=True))


def test_scrub_text_with_real_synthea_identifiers():
    """Names, SSNs, licences and addresses of the real Synthea extract, planted in a note, all go."""
    path = SHARED_DATA / "ehr" / "synthea_59" / "csv" / "patients.csv"
    if not path.exists():
        pytest.skip("shared Synthea extract not available")
    patients = pd.read_csv(path, dtype=str).head(30)
    for row in patients.itertuples(index=False):
        fields = [row.FIRST, row.LAST, row.SSN, row.DRIVERS, row.PASSPORT, row.ADDRESS, row.BIRTHDATE]
        known = [f for f in fields if isinstance(f, str)]
        first, last = re.sub(r"\d+$", "", row.FIRST), re.sub(r"\d+$", "", row.LAST)
        note = (
            f"{first} {last} (DOB {row.BIRTHDATE}) lives at {row.ADDRESS}, {row.CITY}. SSN {row.SSN}. "
            f"Licence {row.DRIVERS}. {last.upper()}, {first.upper()} agreed to the plan."
        )
        out = scrub_text(note, known)
        assert find_identifier_hits(out, known) == [], "identifier left in note for a Synthea row"
        assert "agreed to the plan" in out


# --------------------------------------------------------------------------------------------------
# WFDB comments and leak scanning
# --------------------------------------------------------------------------------------------------


def test_deidentify_wfdb_comments_drops_identifier_lines():
    comments = [
        "patient: Jorge Vela mrn: 12345678 dob: 1950-01-01",
        "mrn: 12345678",
        "<age>: 93 <sex>: M",
        "Aldomet, Inderal",
        "Recorded by Jorge on 2024-03-01 at bedside",
        "Jorge Vela",
        "time: 10:30 lead: MLII",
    ]
    out = deidentify_wfdb_comments(comments, ["Jorge", "Vela", "12345678"])
    assert out == [
        "<age>: [AGE90+] <sex>: M",
        "Aldomet, Inderal",
        "Recorded by [NAME] on [DATE] at bedside",
        "time: 10:30 lead: MLII",
    ]


def test_find_identifier_hits_reports_kinds_not_values():
    ids = ["Jorge Luis88", "555-123-4567", "999-75-6624", "12345678", "jv@example.com", "568 Hills Branch", "1950-01-31"]
    text = "JORGE called from 555.123.4567 re: 999 75 6624; chart 12-34-56-78; mail JV@Example.com; 568 hills branch; born 01/31/1950"
    hits = find_identifier_hits(text, ids)
    assert hits == ["name", "phone", "ssn", "mrn", "email", "address", "date"]
    assert all(v not in " ".join(hits) for v in ids)
    assert find_identifier_hits("nothing to see: Luisa, 5551234, 1950", ids) == []
    assert find_identifier_hits("[NAME] and [PHONE]", ["Name", "Phone"]) == []
