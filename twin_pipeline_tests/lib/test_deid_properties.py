"""Property tests (hypothesis) for twin_pipeline.lib.deid: date shifts and text scrubbing."""

from __future__ import annotations

import re

import pandas as pd
from faker.providers.person.en_US import Provider as FakerPerson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin_pipeline.lib.deid import (
    PHI_TAGS,
    DeidKey,
    date_shift_days,
    scrub_text,
    shift_dates,
)

KEY = DeidKey.from_secret("property-test-secret-0123456789")
TAG_RE = re.compile("|".join(re.escape(t) for t in PHI_TAGS))
FILLER_WORDS = (
    "patient reports fatigue and dyspnea will follow up in weeks BP HR mg daily Wells score Foley "
    "May Mark Will Hope Grant stage the of with no and plan labs"
).split()
NAMES = sorted(set(FakerPerson.first_names) | set(FakerPerson.last_names))

patient_ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=20).filter(
    lambda s: s.strip() != ""
)
timestamps = st.datetimes(min_value=pd.Timestamp("1900-01-01").to_pydatetime(),
                          max_value=pd.Timestamp("2100-01-01").to_pydatetime())


@settings(max_examples=200, deadline=None)
@given(pid=patient_ids, site=st.sampled_from(["site_a", "hospital_b"]),
       dates=st.lists(timestamps, min_size=2, max_size=8))
def test_date_shift_keeps_intervals_and_order(pid, site, dates):
    shift = date_shift_days(KEY, site, pid)
    assert shift == date_shift_days(KEY, site, pid)
    assert shift != 0 and abs(shift) <= KEY.max_shift_days
    s = pd.Series(pd.to_datetime(dates))
    out = shift_dates(s, shift)
    # every pairwise interval survives exactly, so does the order
    assert (out.diff().iloc[1:] == s.diff().iloc[1:]).all()
    assert (out.rank(method="first") == s.rank(method="first")).all()
    assert ((out - s) == pd.Timedelta(days=shift)).all()


# ---- scrubbing ------------------------------------------------------------------------------------

synthetic_names = st.one_of(
    st.sampled_from(NAMES),
    st.from_regex(r"[A-Z][a-z]{2,9}", fullmatch=True),
    st.from_regex(r"[A-Z][a-zé]{2,8}-[A-Z][a-z]{2,8}", fullmatch=True),
)
synthea_names = st.tuples(synthetic_names, st.one_of(st.just(""), st.integers(10, 999).map(str))).map("".join)
phones = st.tuples(st.integers(200, 989), st.integers(200, 999), st.integers(0, 9999))
ssns = st.tuples(st.integers(100, 899), st.integers(10, 99), st.integers(1000, 9999))
mrns = st.integers(10**5, 10**10).map(str)


def _phone_forms(a: int, b: int, c: int) -> list[str]:
    return [f"{a}-{b}-{c:04d}", f"({a}) {b}-{c:04d}", f"{a}.{b}.{c:04d}", f"{a} {b} {c:04d}", f"{a}{b}{c:04d}",
            f"+1 {a} {b} {c:04d}"]


def _name_forms(name: str) -> list[str]:
    plain = re.sub(r"\d+$", "", name)
    return [name, plain, plain.upper(), plain.lower(), plain + "'s", plain.capitalize()]


@st.composite
def notes_with_known(draw):
    first, last = draw(synthea_names), draw(synthea_names)
    a, b, c = draw(phones)
    s1, s2, s3 = draw(ssns)
    mrn = draw(mrns)
    known = [first, last, f"{a}-{b}-{c:04d}", f"{s1}-{s2}-{s3}", mrn]
    mentions = (
        [draw(st.sampled_from(_name_forms(first))), draw(st.sampled_from(_name_forms(last)))]
        + [draw(st.sampled_from(_phone_forms(a, b, c))), draw(st.sampled_from([f"{s1}-{s2}-{s3}", f"{s1}{s2}{s3}"])),
           draw(st.sampled_from([mrn, f"MRN{mrn}", f"MRN: {mrn}"]))]
    )
    words = draw(st.lists(st.sampled_from(FILLER_WORDS), min_size=0, max_size=30))
    seps = [" ", ", ", ". ", " (", ") ", ": ", "\n", "-"]
    pieces = words + draw(st.permutations(mentions))
    pieces = draw(st.permutations(pieces))
    text = "".join(p + draw(st.sampled_from(seps)) for p in pieces)
    return text, known


def _leaks(text: str, known: list[str]) -> list[str]:
    """Independent leak check: name tokens (>= 2 letters, also without trailing digits) on word
    boundaries, case-insensitive; numbers by their digits whatever the separators."""
    text = TAG_RE.sub(" ", text)
    found = []
    digit_runs = ["".join(ch for ch in m.group() if ch.isdigit()) for m in re.finditer(r"\d(?:[\s().+/-]{0,3}\d)*", text)]
    for ident in known:
        digits = re.sub(r"\D", "", ident)
        if len(digits) >= 5:
            if any(digits in run for run in digit_runs):
                found.append(ident)
            continue
        for tok in re.findall(r"[^\W\d_]+\d*", ident):
            for form in {tok, re.sub(r"\d+$", "", tok)}:
                if len(form) >= 2 and re.search(rf"(?<!\w){re.escape(form)}(?!\w)", text, re.IGNORECASE):
                    found.append(ident)
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notes_with_known())
def test_scrub_text_leaves_no_known_identifier(note):
    text, known = note
    out = scrub_text(text, known)
    assert _leaks(out, known) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notes_with_known())
def test_scrub_text_is_idempotent_on_notes(note):
    text, known = note
    once = scrub_text(text, known)
    assert scrub_text(once, known) == once
    assert scrub_text(once) == once


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("abcXYZ019 -/.,:()[]@#+\n") + ["May ", "Dr. ", "MRN ", "Smith ", "[NAME]",
                                                                   "2024-", "555-", "Ann ", "son ", "St "]),
                max_size=60).map("".join),
       st.lists(st.sampled_from(["Smith", "555-123-4567", "12345678", "Name", "a"]), max_size=3))
def test_scrub_text_is_idempotent_on_arbitrary_text(text, known):
    once = scrub_text(text, known)
    assert scrub_text(once, known) == once
