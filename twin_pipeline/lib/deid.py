"""HIPAA Safe Harbor de-identification: pseudonyms, date shifts, ages, ZIP3 and free-text scrubbing.

Plain functions, no Dagster. The privacy boundary (ARCHITECTURE.md) in code:

- ``pseudonym``: keyed HMAC-SHA256 of (kind, site, local id) with a secret from the environment; the
  same patient gets the same pseudonym in every delivery and every source.
- ``date_shift_days``: one keyed shift per patient in [-N, -1] ∪ [1, N] days, applied to every
  timestamp of that patient (``shift_dates``), so intervals and order survive exactly.
- ``safe_age`` / ``age_band`` / ``safe_birth_year``: ages over 89 collapse to the single 90+ category.
- ``zip3``: 3-digit ZIP, restricted ZIP3s (population <= 20,000) and anything malformed become "000".
- ``scrub_text``: free text with direct identifiers replaced by typed tags ([NAME], [PHONE], ...),
  from the patient's own structured identifiers, regular expressions (``PHI_PATTERNS``) and a names
  dictionary (Faker's en_US first/last names) for relatives and providers.

Nothing here logs or raises with identifier values in the message.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from faker.providers.address.en_US import Provider as _FakerAddress
from faker.providers.lorem.en_US import Provider as _FakerLorem
from faker.providers.person.en_US import Provider as _FakerPerson

__all__ = [
    "AGE_BANDS",
    "COMMON_WORD_NAMES",
    "KIND_PREFIX",
    "PHI_PATTERNS",
    "PHI_TAGS",
    "DeidKey",
    "PhiSpan",
    "Scrubber",
    "age_band",
    "age_years",
    "date_shift_days",
    "date_shift_series",
    "deidentify_wfdb_comments",
    "find_identifier_hits",
    "find_phi_spans",
    "load_restricted_zip3",
    "pseudonym",
    "pseudonymize_series",
    "safe_age",
    "safe_birth_year",
    "scrub_series",
    "scrub_text",
    "shift_dates",
    "zip3",
]

# --------------------------------------------------------------------------------------------------
# Key, pseudonyms, date shifts
# --------------------------------------------------------------------------------------------------

MIN_SECRET_CHARS = 16

#: pseudonym kind -> one-letter prefix
KIND_PREFIX: dict[str, str] = {
    "person": "P",
    "encounter": "E",
    "record": "R",
    "device": "D",
    "interview": "I",
}

_PSEUDONYM_DOMAIN = b"twin_pipeline/pseudonym/v1"
_SHIFT_DOMAIN = b"twin_pipeline/date-shift/v1"


@dataclass(frozen=True)
class DeidKey:
    """The site's de-identification secret and date-shift range.

    ``secret`` comes from the environment (a Dagster ``EnvVar``); it is never shown by ``repr``/``str``.
    ``max_shift_days`` = N: every patient's dates move by a keyed number of days in [-N, -1] ∪ [1, N].
    """

    secret: bytes = field(repr=False)
    max_shift_days: int = 180

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes | bytearray):
            raise TypeError("DeidKey.secret must be bytes (use DeidKey.from_secret for a str)")
        if len(self.secret) < MIN_SECRET_CHARS:
            raise ValueError(f"DeidKey secret too short: need at least {MIN_SECRET_CHARS} bytes")
        if not isinstance(self.max_shift_days, int | np.integer) or self.max_shift_days < 1:
            raise ValueError("DeidKey.max_shift_days must be an integer >= 1")

    @classmethod
    def from_secret(cls, secret: str, max_shift_days: int = 180) -> DeidKey:
        """Build a key from the secret string (e.g. the ``TWIN_DEID_SECRET`` environment variable).

        Raises ``ValueError`` if the secret is missing, blank or shorter than 16 characters.
        """
        if secret is None or not isinstance(secret, str) or not secret.strip():
            raise ValueError("de-identification secret is empty: set it in the environment")
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(
                f"de-identification secret too short: need at least {MIN_SECRET_CHARS} characters"
            )
        return cls(secret=secret.encode("utf-8"), max_shift_days=int(max_shift_days))

    def __repr__(self) -> str:
        return f"DeidKey(secret=<hidden>, max_shift_days={self.max_shift_days})"

    __str__ = __repr__


def _encode_fields(*fields: str) -> bytes:
    """Unambiguous encoding: each UTF-8 field prefixed by its 8-byte big-endian length."""
    out = bytearray()
    for f in fields:
        b = f.encode("utf-8")
        out += struct.pack(">Q", len(b)) + b
    return bytes(out)


def _normalize_local_id(local_id: object) -> str:
    """Local ids as text: surrounding whitespace dropped, integral floats (CSV NaN-upcast) as ints."""
    if isinstance(local_id, float | np.floating) and float(local_id).is_integer():
        local_id = int(local_id)
    text = str(local_id).strip()
    if not text:
        raise ValueError("empty local id cannot be pseudonymized")
    return text


def _digest(key: DeidKey, domain: bytes, *fields: str) -> bytes:
    return hmac.new(key.secret, domain + _encode_fields(*fields), hashlib.sha256).digest()


def pseudonym(key: DeidKey, site_id: str, local_id: str, kind: str = "person") -> str:
    """Keyed pseudonym of a site-local id: kind letter + 16 hex chars of HMAC-SHA256 (17 chars).

    The message is the length-prefixed (kind, site_id, local_id), so no two different triples collide
    by concatenation ("a|b","c" vs "a","b|c"). Deterministic: the same patient gets the same
    pseudonym in every delivery and source of the site. ``kind`` is one of ``KIND_PREFIX``.
    """
    try:
        prefix = KIND_PREFIX[kind]
    except KeyError:
        raise ValueError(f"unknown pseudonym kind {kind!r}; expected one of {sorted(KIND_PREFIX)}") from None
    local = _normalize_local_id(local_id)
    return prefix + _digest(key, _PSEUDONYM_DOMAIN, kind, str(site_id), local).hex()[:16]


def pseudonymize_series(key: DeidKey, site_id: str, s: pd.Series, kind: str = "person") -> pd.Series:
    """``pseudonym`` applied to each value of ``s`` (one HMAC per distinct value); missing stays missing.

    Returns an object Series with the index of ``s``.
    """
    if kind not in KIND_PREFIX:
        raise ValueError(f"unknown pseudonym kind {kind!r}; expected one of {sorted(KIND_PREFIX)}")
    present = s.notna()
    out = pd.Series(np.full(len(s), np.nan, dtype=object), index=s.index, dtype=object)
    if present.any():
        values = s[present]
        uniques = pd.unique(values)
        mapping = {u: pseudonym(key, site_id, u, kind) for u in uniques}
        out[present] = values.map(mapping).to_numpy(dtype=object)
    out[~present] = s[~present].astype(object)
    return out


def _shift_from_digest(digest: bytes, n: int) -> int:
    u = int.from_bytes(digest[:8], "big") % (2 * n)
    return u - n if u < n else u - n + 1


def date_shift_days(key: DeidKey, site_id: str, local_patient_id: str) -> int:
    """The patient's date shift in days, in [-N, -1] ∪ [1, N] with N = ``key.max_shift_days``.

    Keyed on (site, local patient id) only, so every source and every delivery of the patient gets
    the same shift; never 0.
    """
    local = _normalize_local_id(local_patient_id)
    return _shift_from_digest(_digest(key, _SHIFT_DOMAIN, str(site_id), local), key.max_shift_days)


def date_shift_series(key: DeidKey, site_id: str, patient_ids: pd.Series) -> pd.Series:
    """Per-row date shift (days, ``Int64``) for a Series of local patient ids; missing id -> <NA>."""
    present = patient_ids.notna()
    out = pd.Series(pd.NA, index=patient_ids.index, dtype="Int64")
    if present.any():
        values = patient_ids[present]
        mapping = {u: date_shift_days(key, site_id, u) for u in pd.unique(values)}
        out[present] = values.map(mapping).astype("int64").to_numpy()
    return out


def shift_dates(s: pd.Series, days: pd.Series | int) -> pd.Series:
    """Move datetimes by whole days: ``s`` (datetime64, naive or tz-aware) + ``days`` (int or per-row).

    A per-row ``days`` Series must share ``s``'s index. NaT stays NaT; a missing shift gives NaT (a
    date is never released unshifted). Intervals between dates shifted by the same amount are exact.
    """
    if not pd.api.types.is_datetime64_any_dtype(s):
        raise TypeError(f"shift_dates needs a datetime64 Series, got dtype {s.dtype}")
    if isinstance(days, pd.Series):
        if not days.index.equals(s.index):
            raise ValueError("shift_dates: days must share the index of the dates")
        numeric = pd.to_numeric(days, errors="raise").astype(float)
        if not np.all(np.isnan(numeric) | (numeric == np.round(numeric))):
            raise ValueError("shift_dates: day offsets must be whole numbers")
        delta = pd.to_timedelta(numeric, unit="D")
    else:
        if isinstance(days, bool) or not isinstance(days, int | np.integer):
            raise TypeError("shift_dates: days must be an int or a Series of ints")
        delta = pd.Timedelta(days=int(days))
    return s + delta


# --------------------------------------------------------------------------------------------------
# Ages, birth years, ZIP codes
# --------------------------------------------------------------------------------------------------

#: 5-year age bands in order, then the single Safe Harbor category for ages over 89
AGE_BANDS: tuple[str, ...] = tuple(f"{lo}-{lo + 4}" for lo in range(0, 90, 5)) + ("90+",)
SAFE_HARBOR_MAX_AGE = 89


def _as_dates(x: pd.Series | pd.Timestamp) -> pd.Series | pd.Timestamp:
    """Calendar dates (midnight) without time zone, for age arithmetic."""
    if isinstance(x, pd.Series):
        x = pd.to_datetime(x)
        if x.dt.tz is not None:
            x = x.dt.tz_localize(None)
        return x.dt.normalize()
    x = pd.Timestamp(x)
    if x.tzinfo is not None:
        x = x.tz_localize(None)
    return x.normalize()


def _birthday_in(year: pd.Series, birth: pd.Series) -> pd.Series:
    """Birthday of ``birth`` in calendar ``year`` (Feb 29 birthdays fall on Mar 1 in common years)."""
    month = birth.dt.month.astype(float)
    day = birth.dt.day.astype(float)
    y = year.astype(float)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    feb29 = (month == 2) & (day == 29) & ~leap
    month = month.where(~feb29, 3.0)
    day = day.where(~feb29, 1.0)
    ok = y.notna() & month.notna() & day.notna()
    out = pd.Series(pd.NaT, index=birth.index, dtype="datetime64[ns]")
    if ok.any():
        out[ok] = pd.to_datetime(
            pd.DataFrame({"year": y[ok].astype(int), "month": month[ok].astype(int), "day": day[ok].astype(int)})
        )
    return out


def age_years(birth: pd.Series, at: pd.Series | pd.Timestamp) -> pd.Series:
    """Exact age in years (float) at ``at``: completed calendar years + fraction of the current year.

    The age is exactly 90.0 on the 90th birthday (a 365.25-day year would say 89.998). Missing
    dates or ``at`` before birth give NaN (count them in a quality check; they are data errors).
    """
    b = _as_dates(birth)
    a = _as_dates(at)
    if not isinstance(a, pd.Series):
        a = pd.Series(a, index=b.index, dtype="datetime64[ns]")
    elif not a.index.equals(b.index):
        raise ValueError("age_years: 'at' must share the index of 'birth'")
    b = b.astype("datetime64[ns]")
    a = a.astype("datetime64[ns]")
    before_bday = (a.dt.month < b.dt.month) | ((a.dt.month == b.dt.month) & (a.dt.day < b.dt.day))
    years = a.dt.year - b.dt.year - before_bday.astype(float)
    last = _birthday_in(b.dt.year + years, b)
    nxt = _birthday_in(b.dt.year + years + 1, b)
    frac = (a - last) / (nxt - last)
    age = (years + frac).astype(float)
    return age.where(age >= 0)


def safe_age(age: pd.Series) -> pd.Series:
    """Age in whole years (floor) with every age over 89 collapsed to 90.0 (the single 90+ category)."""
    a = pd.to_numeric(age, errors="coerce").astype(float)
    whole = np.floor(a)
    return whole.where(~(whole > SAFE_HARBOR_MAX_AGE), 90.0)


def age_band(age: pd.Series) -> pd.Series:
    """5-year age band label ("0-4" .. "85-89", "90+") of a float age in years; NaN/negative -> NaN."""
    whole = np.floor(pd.to_numeric(age, errors="coerce").astype(float))
    idx = np.minimum(whole // 5, len(AGE_BANDS) - 1)
    labels = np.array(AGE_BANDS, dtype=object)
    valid = whole.notna() & (whole >= 0)
    out = pd.Series(np.nan, index=age.index, dtype=object)
    out[valid] = labels[idx[valid].astype(int).to_numpy()]
    return out


def safe_birth_year(birth: pd.Series, at: pd.Series | pd.Timestamp) -> pd.Series:
    """Year of birth (``Int64``), <NA> when the age at ``at`` is over 89 (or unknown)."""
    age = age_years(birth, at)
    year = pd.to_datetime(birth).dt.year.astype("Int64")
    return year.where(age.notna() & (np.floor(age) <= SAFE_HARBOR_MAX_AGE), pd.NA).astype("Int64")


_ZIP_RE = re.compile(r"^(\d{5})(?:-?\d{4})?$")


def _zip3_one(value: object, restricted: set[str]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "000"
    if isinstance(value, int | np.integer) or (isinstance(value, float | np.floating) and float(value).is_integer()):
        n = int(value)  # CSV readers drop leading zeros: 2134 is ZIP 02134
        if not 0 <= n <= 99999:
            return "000"
        text = f"{n:05d}"
    elif isinstance(value, str):
        text = value.strip()
    else:
        return "000"
    m = _ZIP_RE.match(text)
    if not m:
        return "000"
    z3 = m.group(1)[:3]
    return "000" if z3 in restricted else z3


def zip3(zip_series: pd.Series, restricted: set[str]) -> pd.Series:
    """Safe Harbor ZIP: first 3 digits of a 5-digit or ZIP+4 code; "000" when the ZIP3 is restricted
    (population <= 20,000), or the value is missing or malformed. Integer ZIPs are zero-padded."""
    restricted = {str(r) for r in restricted}
    return pd.Series([_zip3_one(v, restricted) for v in zip_series], index=zip_series.index, dtype=object)


def load_restricted_zip3(path: str | Path) -> set[str]:
    """Restricted ZIP3 codes from ``data/vocab/restricted_zip3.csv`` (column ``zip3``, 3 digits each)."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "zip3" not in frame.columns:
        raise ValueError(f"{path}: missing column 'zip3'")
    codes = frame["zip3"].str.strip()
    bad = ~codes.str.fullmatch(r"\d{3}")
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 2).tolist()[:5]
        raise ValueError(f"{path}: malformed zip3 values on lines {rows}")
    return set(codes)


# --------------------------------------------------------------------------------------------------
# Free-text patterns
# --------------------------------------------------------------------------------------------------

PHI_TAGS: tuple[str, ...] = (
    "[NAME]", "[PHONE]", "[EMAIL]", "[SSN]", "[MRN]", "[DATE]", "[ADDRESS]", "[ID]", "[URL]", "[IP]", "[AGE90+]",
)
_TAG_RE = re.compile("|".join(re.escape(t) for t in PHI_TAGS))

_MONTHS = (
    "Jan(?:uary)?", "Feb(?:ruary)?", "Mar(?:ch)?", "Apr(?:il)?", "May", "June?", "July?", "Aug(?:ust)?",
    "Sep(?:t(?:ember)?)?", "Oct(?:ober)?", "Nov(?:ember)?", "Dec(?:ember)?",
)


def _title_and_upper(alts: Iterable[str]) -> str:
    """Regex alternation of month names as written (Title case) or in capitals, never lower case."""
    return "(?:" + "|".join(form for a in alts for form in (a, a.upper())) + ")"


_MON = _title_and_upper(_MONTHS) + r"\.?"
_ORD = r"(?:st|nd|rd|th)?"
_TIME = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s?[AaPp]\.?[Mm]\.?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
_STATES_ABBR = sorted(
    set(_FakerAddress.states_abbr) | set(getattr(_FakerAddress, "known_usps_abbr", ()))
    | set(getattr(_FakerAddress, "military_state_abbr", ()))
)
_STATES = sorted(_FakerAddress.states, key=len, reverse=True)
# state abbreviations that are not also clinical abbreviations (MI, MS, CA, SC, NC, PR, CT, PA, MD ...):
# "City, ST" without a ZIP counts as an address only with these
_SAFE_STATE_ABBR = "AK AL AZ FL IL KS KY MN MO MT ND NH NJ NM NV NY OH SD TN TX UT VT WA WI WV WY".split()
_STREET_SUFFIXES = sorted(
    set(_FakerAddress.street_suffixes)
    | {"St", "Ave", "Av", "Rd", "Blvd", "Dr", "Ln", "Ct", "Pl", "Hwy", "Pkwy", "Cir", "Ter", "Trl", "Sq", "Pk"},
    key=len,
    reverse=True,
)
_UNIT = r"(?:Apt|Apartment|Unit|Suite|Ste|Fl|Floor|Rm|Room|Bldg|Building|Lot|#)"

# Every pattern starts with a character class or literal (lookbehinds come after the first
# character), so the regex engine skips to candidate positions in C instead of trying every position;
# ``_HINTS`` gives each pattern a cheap necessary condition so most notes skip most patterns.
_SUFFIX_RE = "(?:" + "|".join(_STREET_SUFFIXES) + ")"
_NUM_START = r"\d(?<![\w/.-]\d)"  # a number not glued to a word, a slash, a dot or a hyphen

#: regular expressions for direct identifiers; a named group ``phi`` (when present) is the part replaced
PHI_PATTERNS: dict[str, re.Pattern[str]] = {
    # 123-45-6789 ; "SSN: 123456789"
    "ssn": re.compile(r"\d(?<![\w-]\d)\d{2}-\d{2}-\d{4}(?![\d-])"),
    "ssn_labelled": re.compile(
        r"[Ss](?<![A-Za-z0-9_][Ss])(?i:SN|S\#|ocial\s+security(?:\s+(?:number|no\.?|\#))?)\s*[:#]?\s*"
        r"(?P<phi>\d{3}[- ]?\d{2}[- ]?\d{4})(?!\d)"
    ),
    # (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, x123 extensions; a country code
    # before it (+1, 1-, 001-) is added by ``_extend_phone``
    "phone": re.compile(
        r"[\d(](?<![\w+.(][\d(])(?:(?<=\()\d{3}\)\s?|(?<=\d)\d{2}[\s.-])\d{3}[\s.-]\d{4}"
        r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,5})?(?!\d)"
    ),
    "phone_digits": re.compile(r"\d(?<![\w.+-]\d)(?:(?<=1)\d{10}|\d{9})(?:\s?x\d{1,5})?(?!\d|\.\d)"),
    "phone_local": re.compile(r"\d(?<![\w.-]\d)\d{2}-\d{4}(?![\w-])"),
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    "url": re.compile(
        r"[hHfFwW](?<![A-Za-z0-9_][hHfFwW])(?i:(?:ttps?|tp)://|ww\.)[^\s<>\"'\[\]]*[^\s<>\"'\[\].,;:!?)]"
    ),
    # bare domains: matched from the top-level domain, host labels before it added by ``_extend_domain``
    "url_domain": re.compile(
        r"\.(?<=[A-Za-z0-9]\.)(?:com|org|net|edu|gov|info|biz|io|COM|ORG|NET|EDU|GOV|INFO|BIZ|IO)\b"
        r"(?:/[^\s<>\"'\[\]]*[^\s<>\"'\[\].,;:!?)])?"
    ),
    "ip": re.compile(
        r"\d(?<![\d.]\d)(?<=\b\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\d|\.\d)"
        r"|[0-9a-fA-F](?<![\w:][0-9a-fA-F])[0-9a-fA-F]{0,3}(?::[0-9a-fA-F]{1,4}){7}(?![\w:])"
    ),
    # MRN: 12345678, MRN123456, MR# 1234567, medical record number 1234567, chart # 1234
    "mrn": re.compile(
        r"[MmCcPp](?<![A-Za-z][MmCcPp])(?i:RN|R\s?\#|ed(?:ical)?\s+rec(?:ord)?\s*(?:number|num|no\.?|\#)"
        r"|hart\s*(?:number|no\.?|\#)|(?:atient|t)\s*(?:id|\#))\s*(?:number|no\.?|\#)?\s*[:=#]?\s*"
        r"(?P<phi>[A-Z]{0,3}-?\d{4,12}[A-Z]?)\b"
    ),
    # 2024-03-01(T10:00Z), 2024/03/01, 03/01/2024, 3-1-24, 01.03.2024, 1st of March 2024, 01-Mar-2024
    "date": re.compile(
        _NUM_START + r"(?:"
        rf"\d{{3}}[-/]\d{{1,2}}[-/]\d{{1,2}}{_TIME}"
        rf"|\d?[/-]\d{{1,2}}[/-](?:\d{{4}}|\d{{2}}){_TIME}"
        rf"|\d?\.\d{{1,2}}\.\d{{4}}{_TIME}"
        rf"|\d?{_ORD}(?:\s+of)?[\s-]+{_MON}(?:,?[\s-]+\d{{4}}|-\d{{2}}(?!\d))?"
        r"|\d?/(?:19|20)\d{2}"
        r")(?![\w/])"
    ),
    # March 1, 2024 ; Mar. 1 ; March 2024
    "date_month_first": re.compile(
        rf"{_MON}(?:\s+\d{{1,2}}{_ORD}(?:,?\s+\d{{4}})?(?!\d)|,?\s+\d{{4}})(?![\w/])"
    ),
    # m/d without a year, only after a date word ("seen 3/1", never "Mini-Cog 3/5"): the word and the
    # month/day ranges are checked by ``_pattern_spans``
    "date_month_day": re.compile(r"\d(?<![\w/.-]\d)\d?/\d{1,2}(?![\d/]|\.\d)"),
    # a 5-digit / ZIP+4 code after a state or "ZIP"; context (state or "ZIP" before it) checked by ``_pattern_spans``
    "zip": re.compile(r"\d(?<![\d-]\d)\d{4}(?:-\d{4})?(?![\d-])"),
    # 123 Main St, 568 Hills Branch Unit 86, 12B N. Oak Avenue Apt. 4
    "address": re.compile(
        r"\d(?<![\w.,-]\d)\d{0,5}[A-Z]?\s+(?:(?:[NSEW]|NE|NW|SE|SW|North|South|East|West)\.?\s+)?"
        r"(?:[A-Z][A-Za-z'-]+\.?\s+){1,3}?" + _SUFFIX_RE + r"\b\.?"
        rf"(?:,?\s+{_UNIT}\.?\s*\#?\s*[A-Za-z0-9-]*\d[A-Za-z0-9-]*)?"
    ),
    "address_unit": re.compile(
        r"(?:Apt|Apartment|Suite|Ste|Unit)\.?\s*\#?\s*\d+[A-Za-z]?\b"
        r"|P\.?\s?O\.?\s+Box\s+\d+|(?:PSC|Unit)\s+\d{4},?\s+Box\s+\d{4}|(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5}"
        r"|US[NS]S\s+[A-Z][a-z]+"
    ),
    # Lake Monique, PW 71057 ; Springfield, Illinois ; Austin, TX (city, state: the city is PHI)
    "address_city": re.compile(
        r"[A-Z](?<![A-Za-z][A-Z])[a-z]+(?:\s[A-Z][a-z]+){0,2},\s+(?:(?:"
        + "|".join(_STATES_ABBR) + r")\s+\d{5}(?:-\d{4})?|(?:"
        + "|".join(_SAFE_STATE_ABBR + [re.escape(s) for s in _STATES]) + r")\b)"
    ),
    # licence / passport-like: letters + digits (S99912345, X12345678X)
    "id": re.compile(r"[A-Z](?<![\w-][A-Z])[A-Z]{0,2}\d{5,10}[A-Z]?(?![\w-])"),
    # GS1 UDI: (01) GTIN-14 then (17) expiry, (10) lot, (21) serial ...
    "udi": re.compile(r"\(01\)\d{14}(?:\(\d{2,4}\)[^\s(]*[^\s(.,;:])*"),
    "id_labelled": re.compile(
        r"(?i:\b(?:account|acct|member|policy|beneficiary|plan|certificate|serial|device|badge|employee"
        r"|licen[cs]e|passport|DL|driver'?s?\s+licen[cs]e|insurance)\s*(?:id|no\.?|number|num|\#)\s*[:#]?\s*"
        r"|\b(?:passport|licen[cs]e|serial|VIN|SN|S/N)\s*[:#]\s*)"
        r"(?P<phi>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{3,19})"
    ),
    # any other long number (7+ digits) that is not a dose or a count
    "id_number": re.compile(r"\d(?<![\d.,]\d)\d{6,}(?!\d|[.,]\d|(?i:\s*(?:units?|iu|u\b|copies|cells|/)))"),
    # ages over 89: "92-year-old", "95 y/o", "age: 93", "aged 101"
    "age_over_89": re.compile(
        r"(?P<phi>[91](?<![\w.][91])(?:(?<=9)\d|(?<=1)[01]\d))"
        r"(?=\s*-?\s*(?i:years?\b|yrs?\b|y/o\b|yo\b|y\.o\.))"
        r"|[Aa](?<![A-Za-z][Aa])(?i:ged?)>?\s*[:=]?\s*(?P<phi2>9\d|1[01]\d)\b"
        r"(?!(?i:\s*(?:days?|d|weeks?|wks?|months?|mos?|hours?|h|hrs?)\b))"
    ),
}

# patterns whose match must start a word (checked in Python: a lookbehind first would slow the scan)
_WORD_START = frozenset({"date_month_first", "address_unit"})

_PATTERN_TAG: dict[str, str] = {
    "ssn": "[SSN]", "ssn_labelled": "[SSN]",
    "phone": "[PHONE]", "phone_digits": "[PHONE]", "phone_local": "[PHONE]",
    "email": "[EMAIL]", "url": "[URL]", "url_domain": "[URL]", "ip": "[IP]", "mrn": "[MRN]",
    "date": "[DATE]", "date_month_first": "[DATE]", "date_month_day": "[DATE]",
    "zip": "[ADDRESS]", "address": "[ADDRESS]", "address_unit": "[ADDRESS]", "address_city": "[ADDRESS]",
    "id": "[ID]", "udi": "[ID]", "id_labelled": "[ID]", "id_number": "[ID]",
    "age_over_89": "[AGE90+]",
}
# tie-break when two overlapping spans have the same length: lower wins
_TAG_PRIORITY = {t: i for i, t in enumerate(
    ["[SSN]", "[PHONE]", "[MRN]", "[EMAIL]", "[URL]", "[IP]", "[DATE]", "[AGE90+]", "[ADDRESS]", "[ID]", "[NAME]"]
)}

# --------------------------------------------------------------------------------------------------
# Names dictionary
# --------------------------------------------------------------------------------------------------

# Faker names that are also ordinary English words, places, months, units, scales or eponyms used in
# clinical text ("Will follow up", "Wells score", "Foley catheter", "Baker's cyst"): scrubbed only
# next to another name, after a title (Mr/Dr ...) or after a relation word (daughter, wife ...).
_AMBIGUOUS_NAMES = frozenset("""
Adams Allen Amber Angel April Austin Autumn Baker Ball Banks Barber Bass Bean Beard Beck Bell Best Bill Bird
Bishop Black Bond Booker Booth Branch Brady Brandy Bridges Bright Brook Brooke Brooks Brown Buck Bush Butler
Cain Cannon Carol Carpenter Case Chad Chambers Chase Cherry Christian Church Clark Clay Cole Cook Cooke Crane
Cross Crystal Curry Daisy Dakota Dale Dawn Day Dean Destiny Diamond Don Downs Drake Drew Duke Earl Ebony
English Faith Farmer Fields Fisher Flowers Foley Ford Foster Fowler Fox Frank French Frey Frost Fry Fuller
Gamble Gates Gay Gene Glass Glen Golden Good Grace Graham Grant Graves Gray Green Greene Gross Guy Hale Hall
Hamilton Hampton Hardy Hart Heath Herring Hill Holder Holmes Hood Hoover Hope Horn House Houston Huff Hunt
Hunter Jack Jackson Jade Jay Jean Jesus Jones Jordan Joy Kaiser Kelly Kent Key Kidd King Knight Koch Lamb
Lance Lane Le Lee Levine Little Long Love Lowe Lynch Mallory Mann Mark Marks Marsh Mason Max May Mayo Meadows
Melody Mercedes Miles Mills Misty Moody Moon Morse Moss Murphy Newton Noble Norton Osborn Pace Page Park Parker
Parks Payne Peck Penny Pierce Pope Porter Potter Potts Powers Pratt Price Prince Pugh Rich Richmond Rivers Roach
Robin Roman Rose Rush Sandy Savage Savannah Schwartz Sharp Shields Short Sierra Small Snow Sparks Spears Stark
Steele Stokes Stone Stout Strong Summer Summers Swan Sydney Tanner Todd Turner Valentine Virginia Wade Wagner
Walker Wall Walls Ward Ware Washington Waters Watts Weber Weeks Weiss Wells West White Will Wilson Wise Wolf
Wolfe Wood Woods York Young Barrett Hess Bowen Ray Reed Rice Berry Winters
""".split())

_NAMES_ALL = frozenset(
    n for n in (
        set(_FakerPerson.first_names) | set(_FakerPerson.last_names)
        | set(getattr(_FakerPerson, "first_names_male", ())) | set(getattr(_FakerPerson, "first_names_female", ()))
    ) if " " not in n and len(n) >= 2
)
_NAMES_STRONG = _NAMES_ALL - _AMBIGUOUS_NAMES
_NAMES_WEAK = _AMBIGUOUS_NAMES

_TITLES = frozenset("mr mrs ms miss mx dr doctor prof professor rev".split())
_RELATIONS = frozenset("""
wife husband spouse partner son daughter mother father mom mum dad brother sister sibling aunt uncle niece
nephew cousin grandson granddaughter grandmother grandfather grandma grandpa stepson stepdaughter stepmother
stepfather friend neighbor neighbour caregiver guardian fiance fiancee fiancé fiancée boyfriend girlfriend
roommate child
""".split())
_CONTACT_VERBS = frozenset("named called phoned contacted texted emailed paged".split())
_CONTACT_NOUNS = frozenset("left spoke talked message msg".split())
_CONTACT_PREPS = frozenset(("for", "with", "to"))
_CUE_WORDS = _TITLES | _RELATIONS | _CONTACT_VERBS
_CUE_ALL = _CUE_WORDS | _CONTACT_PREPS
# capitalized words never taken for a name after a title ("Dr. The ..." does not happen, "Dr. May" does)
_NOT_AFTER_TITLE = frozenset("The A An And Or Of In On At To For With Patient Pt".split())
# ... nor after a relation word ("Mother: Diabetes", "son Tuesday"): function words, months, days,
# family-history vocabulary, and Faker's en_US list of ~1000 common English words
_NOT_NAMES = frozenset("""
The A An And Or Of In On At To For With Without No Not None Yes Patient Pt History Family Deceased Alive
Healthy Unknown Diabetes Cancer Hypertension Stroke Dementia Asthma Arthritis Depression Anxiety Breast Lung
Colon Prostate Ovarian Pancreatic Skin Heart Kidney Liver Thyroid Disease Attack Failure Died Passed Age Aged
Adopted Estranged Lives Living Present Absent Negative Positive Noncontributory Denies Reports States Type
January February March April May June July August September October November December Monday Tuesday
Wednesday Thursday Friday Saturday Sunday
""".split()) | frozenset(w.capitalize() for w in _FakerLorem.word_list)
#: case-folded names that are also ordinary or clinical words: a leak scan does not count them alone
COMMON_WORD_NAMES = frozenset(w.casefold() for w in _AMBIGUOUS_NAMES | _NOT_NAMES)

# word tokens (letters/digits, internal apostrophes) — the unit of name matching
_TOKEN_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_TRAILING_DIGITS_RE = re.compile(r"\d+$")
_DIGIT_RUN_RE = re.compile(r"\d(?:[ \t\-.()/]{0,3}\d)*")
_ISO_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$")
_MONTH_NAMES = (
    "january february march april may june july august september october november december".split()
)


class PhiSpan(NamedTuple):
    """A detected identifier: character range [start, end) of the text and its replacement tag."""

    start: int
    end: int
    tag: str


# --------------------------------------------------------------------------------------------------
# Known identifiers (the patient's own structured data)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    """Pre-processed known identifiers: name tokens, digit strings and token phrases, each tagged."""

    names: frozenset[str] = frozenset()                       # case-folded name tokens
    digits: tuple[tuple[str, str], ...] = ()                  # (digit string, tag)
    phrases: tuple[tuple[tuple[str, ...], str, bool], ...] = ()  # (tokens, tag, prefix-match allowed)
    kinds: tuple[tuple[str, str], ...] = ()                   # (identifier, kind) for leak reports

    @property
    def empty(self) -> bool:
        return not (self.names or self.digits or self.phrases)


def _strip_possessive(tok: str) -> str:
    if len(tok) > 2 and tok[-2] in "'’" and tok[-1] in "sS":
        return tok[:-2]
    return tok


_PHONE_EXT_RE = re.compile(r"(?i)\s*(?:x|ext\.?|extension)\s*\d{1,5}$")


def _classify_identifier(ident: str) -> str:
    """Shape of a known identifier: the tag it is replaced by."""
    s = _PHONE_EXT_RE.sub("", ident.strip())
    n_digits = sum(c.isdigit() for c in s)
    n_alpha = sum(c.isalpha() for c in s)
    if "@" in s:
        return "[EMAIL]"
    if re.match(r"(?i)^(?:https?://|www\.)", s):
        return "[URL]"
    if _ISO_DATE_RE.match(s) or re.match(r"^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}$", s):
        return "[DATE]"
    if re.match(r"^(?:\d{1,3}\.){3}\d{1,3}$", s):
        return "[IP]"
    if n_digits >= 5 and n_alpha <= 3:
        if re.match(r"^\d{3}-\d{2}-\d{4}$", s):
            return "[SSN]"
        if n_alpha == 0 and (n_digits in (10, 11) or re.search(r"[()+]|\d{3}[-. ]\d{3}[-. ]\d{4}", s)):
            return "[PHONE]"
        if n_alpha == 0:
            return "[MRN]"
        return "[ID]"
    if re.match(r"^\d+[A-Za-z]?\s+\S", s) and n_alpha:
        return "[ADDRESS]"
    words = s.split()
    if n_alpha and all(re.fullmatch(r"[^\W\d_]+(?:['’.-][^\W\d_]*)*\d*\.?", w) for w in words):
        return "[NAME]"
    if n_digits:
        return "[ID]"
    return "[NAME]"


def _date_variants(ident: str) -> list[str]:
    """Other spellings of an ISO date identifier (digit strings and month-name phrases)."""
    m = _ISO_DATE_RE.match(ident.strip())
    if not m:
        return []
    y, mo, d = m.groups()
    imo, iday = int(mo), int(d)
    if not (1 <= imo <= 12 and 1 <= iday <= 31):
        return []
    month = _MONTH_NAMES[imo - 1]
    return [
        f"{y}{mo}{d}", f"{mo}{d}{y}", f"{d}{mo}{y}", f"{imo}{iday}{y}", f"{iday}{imo}{y}",
        f"{month} {iday} {y}", f"{iday} {month} {y}", f"{month[:3]} {iday} {y}", f"{iday} {month[:3]} {y}",
    ]


def _prepare_known(identifiers: Iterable[object] | str | None) -> _Known:
    """Turn the patient's structured identifiers into matchers (no regex compilation per patient)."""
    if identifiers is None:
        return _Known()
    if isinstance(identifiers, str):
        identifiers = [identifiers]
    names: set[str] = set()
    digits: dict[str, str] = {}
    phrases: dict[tuple[str, ...], tuple[str, bool]] = {}
    kinds: list[tuple[str, str]] = []
    for raw in identifiers:
        if raw is None or raw is pd.NA or (isinstance(raw, float) and math.isnan(raw)):
            continue
        if isinstance(raw, float | np.floating) and float(raw).is_integer():
            raw = int(raw)
        ident = str(raw).strip()
        if sum(c.isalnum() for c in ident) < 2:
            continue
        tag = _classify_identifier(ident)
        kinds.append((ident, tag[1:-1].lower()))
        toks = tuple(_strip_possessive(t).casefold() for t in _TOKEN_RE.findall(ident))
        if toks:
            phrases[toks] = (tag, tag == "[ADDRESS]")
        if tag == "[NAME]":
            for t in toks:
                for form in (t, _TRAILING_DIGITS_RE.sub("", t)):
                    if len(form) >= 2 and not form.isdigit():
                        names.add(form)
        only_digits = re.sub(r"\D", "", _PHONE_EXT_RE.sub("", ident) if tag == "[PHONE]" else ident)
        if tag in ("[SSN]", "[PHONE]", "[MRN]", "[ID]", "[DATE]") and len(only_digits) >= 5:
            digits.setdefault(only_digits, tag)
            if tag == "[PHONE]" and len(only_digits) == 11 and only_digits.startswith("1"):
                digits.setdefault(only_digits[1:], tag)
        if tag == "[DATE]":
            for v in _date_variants(ident):
                if v.isdigit():
                    digits.setdefault(v, tag)
                else:
                    phrases.setdefault(tuple(v.split()), (tag, False))
    return _Known(frozenset(names), tuple(digits.items()), tuple((k, v[0], v[1]) for k, v in phrases.items()),
                  tuple(kinds))


# --------------------------------------------------------------------------------------------------
# Span detection
# --------------------------------------------------------------------------------------------------

_ADJ_GAP_RE = re.compile(r"^(?:[ \t]{1,3}|-|,[ \t]{1,2})$")


_TLDS = (".com", ".org", ".net", ".edu", ".gov", ".info", ".biz", ".io")
_HINT_PHONE = re.compile(r"\d{3}[\s.)-]{1,2}\d{3}[\s.-]\d{4}")
_HINT_10DIGITS = re.compile(r"\d{10}")
_HINT_LOCAL_PHONE = re.compile(r"\d{3}-\d{4}")
_HINT_5DIGITS = re.compile(r"\d{5}")
_HINT_7DIGITS = re.compile(r"\d{7}")
_HINT_SSN = re.compile(r"\d-\d\d-\d")
_HINT_IP = re.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d")
_HINT_STREET = re.compile(r"\d\s+[A-Z]")
_HINT_LETTER_DIGITS = re.compile(r"[A-Z]\d{5}")
_HINT_MONTH_DAY = re.compile(r"\d/\d")
_ADDRESS_WORDS = ("Apt", "Apartment", "Suite", "Ste", "Unit", "Box", "PO", "USNS", "USS")
_ID_WORDS = ("licen", "passport", "serial", "vin:", "vin#", "vin no", "s/n", "sn:", "sn#", "account", "acct", "member", "policy",
             "beneficiary", "plan id", "plan no", "plan #", "plan num", "certificate", "device id", "device no",
             "device #", "device num", "badge", "employee", "dl:", "dl#", "dl no", "dl num", "insurance")
_DATE_WORD_BEFORE_RE = re.compile(
    r"(?i:\b(?:on|since|from|until|till|by|dated|dos|seen|admitted|discharged|visit)\s+)$"
)
_HINT_AGE = re.compile(r"[91](?<![\w.][91])(?:(?<=9)\d|(?<=1)[01]\d)(?!\d)")

#: pattern name -> cheap necessary condition on (text, lower-cased text); patterns not listed always run
_HINTS = {
    "ssn": lambda t, lo: _HINT_SSN.search(t) is not None,
    "ssn_labelled": lambda t, lo: "ss" in lo or "social" in lo,
    "phone": lambda t, lo: _HINT_PHONE.search(t) is not None,
    "phone_digits": lambda t, lo: _HINT_10DIGITS.search(t) is not None,
    "phone_local": lambda t, lo: _HINT_LOCAL_PHONE.search(t) is not None,
    "email": lambda t, lo: "@" in t,
    "url": lambda t, lo: "://" in t or "www." in lo,
    "url_domain": lambda t, lo: any(d in lo for d in _TLDS),
    "ip": lambda t, lo: _HINT_IP.search(t) is not None or t.count(":") >= 7,
    "mrn": lambda t, lo: "mr" in lo or "record" in lo or "chart" in lo or " id" in lo or "#" in t,
    "date_month_day": lambda t, lo: _HINT_MONTH_DAY.search(t) is not None,
    "zip": lambda t, lo: _HINT_5DIGITS.search(t) is not None,
    "address": lambda t, lo: _HINT_STREET.search(t) is not None,
    "address_unit": lambda t, lo: any(w in t for w in _ADDRESS_WORDS),
    "address_city": lambda t, lo: ", " in t,
    "id": lambda t, lo: _HINT_LETTER_DIGITS.search(t) is not None,
    "udi": lambda t, lo: "(01)" in t,
    "id_labelled": lambda t, lo: any(w in lo for w in _ID_WORDS),
    "id_number": lambda t, lo: _HINT_7DIGITS.search(t) is not None,
    "age_over_89": lambda t, lo: _HINT_AGE.search(t) is not None,
}
_ZIP_CONTEXT_RE = re.compile(
    r"(?:\b(?:" + "|".join(_STATES_ABBR + [re.escape(s) for s in _STATES]) + r"),?\s+"
    r"|(?i:\bzip(?:\s*code)?\s*[:#]?\s*))$"
)
_COUNTRY_CODE_RE = re.compile(r"(?:\+?1|001)[\s.-]?$")


def _pattern_spans(text: str) -> list[PhiSpan]:
    spans: list[PhiSpan] = []
    low = text.lower()
    for name, pat in PHI_PATTERNS.items():
        hint = _HINTS.get(name)
        if hint is not None and not hint(text, low):
            continue
        tag = _PATTERN_TAG[name]
        for m in pat.finditer(text):
            gd = m.groupdict()
            grp = "phi" if gd.get("phi") is not None else ("phi2" if gd.get("phi2") is not None else None)
            s, e = (m.start(grp), m.end(grp)) if grp else m.span()
            if name in _WORD_START and s > 0 and text[s - 1].isalnum():
                continue
            if name == "zip" and "-" not in m.group() and not _ZIP_CONTEXT_RE.search(text, max(0, s - 30), s):
                continue
            if name == "date_month_day":
                month, day = (int(x) for x in m.group().split("/"))
                if not (1 <= month <= 12 and 1 <= day <= 31 and _DATE_WORD_BEFORE_RE.search(text, max(0, s - 16), s)):
                    continue
            if name == "url_domain":
                k = s
                while k > 0 and (text[k - 1].isalnum() or text[k - 1] in ".-_"):
                    k -= 1
                s = k
            if name.startswith("phone"):
                cc = _COUNTRY_CODE_RE.search(text, max(0, s - 5), s)
                if cc:
                    s = cc.start()
            if e > s:
                spans.append(PhiSpan(s, e, tag))
    return spans


def _digit_spans(text: str, known: _Known) -> list[PhiSpan]:
    spans: list[PhiSpan] = []
    for m in _DIGIT_RUN_RE.finditer(text):
        run = m.group()
        if len(run) < 5:
            continue
        pos = [i for i, c in enumerate(run) if c.isdigit()]
        if len(pos) < 5:
            continue
        digs = "".join(run[i] for i in pos)
        for d, tag in known.digits:
            k = digs.find(d)
            while k >= 0:
                spans.append(PhiSpan(m.start() + pos[k], m.start() + pos[k + len(d) - 1] + 1, tag))
                k = digs.find(d, k + 1)
    return spans


def _short_gap(gap: str) -> bool:
    return len(gap) <= 3 and "\n" not in gap


def _name_and_phrase_spans(text: str, known: _Known) -> list[PhiSpan]:
    """Name tokens (known names, dictionary names, title/relation context) and known token phrases."""
    toks = [(m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]
    n = len(toks)
    if n == 0:
        return []
    spans: list[PhiSpan] = []
    # 0 = not a name, 1 = ambiguous dictionary name, 2 = name
    state = [0] * n
    ends = [0] * n
    lows = [""] * n
    capital = [False] * n
    cues: list[int] = []
    known_names = known.names
    digits = "0123456789"
    for i, (s, _e, tok) in enumerate(toks):
        base = tok[:-2] if len(tok) > 2 and tok[-1] in "sS" and tok[-2] in "'’" else tok
        ends[i] = s + len(base)
        low = lows[i] = base.casefold()
        if low in _CUE_ALL:
            cues.append(i)
        alpha = base.rstrip(digits) if base[-1] in digits else base
        if known_names and (low in known_names or (alpha is not base and alpha.casefold() in known_names)):
            state[i] = 2
            continue
        if alpha and alpha[0].isupper():
            if len(alpha) == 1:
                capital[i] = True  # an initial
            elif not alpha.isupper():
                capital[i] = True
                if alpha in _NAMES_STRONG:
                    state[i] = 2
                elif alpha in _NAMES_WEAK:
                    state[i] = 1

    def adjacent(i: int, j: int) -> bool:
        """Tokens i < j are neighbours: short gap (spaces, hyphen, comma) or an initial's period."""
        gap = text[ends[i]:toks[j][0]]
        if _ADJ_GAP_RE.match(gap):
            return True
        return len(toks[i][2]) == 1 and gap in (". ", ".")

    # context: titles, relation words and contact verbs before a name, "(daughter)" after one
    def maybe_name(j: int) -> bool:
        return capital[j] and (state[j] > 0 or toks[j][2] not in _NOT_NAMES)

    for i in cues:
        low = lows[i]
        if low in _TITLES:
            # Dr. Xyz / Mrs. Ann B. Xyz: up to 3 capitalized tokens, any spelling
            j = i + 1
            while j < n and j <= i + 3 and capital[j] and toks[j][2] not in _NOT_AFTER_TITLE:
                gap = text[ends[j - 1]:toks[j][0]].strip(" \t")
                first = j == i + 1
                if not (gap == "" or (gap == "." and (first or len(toks[j - 1][2]) == 1))):
                    break
                state[j] = 2
                j += 1
            continue
        cue = low in _RELATIONS or low in _CONTACT_VERBS or (
            low in _CONTACT_PREPS and i > 0 and lows[i - 1] in _CONTACT_NOUNS
        )
        if cue:
            # daughter Ann / wife, Hans-Bernd Xyz / message left for Xyz: capitalized non-common words
            j = i + 1
            while j < n and j <= i + 4:
                gap = text[ends[j - 1]:toks[j][0]]
                if j == i + 1 or lows[j - 1] == "is":
                    ok = _short_gap(gap) and gap.strip() in ("", ",", ":")  # not "-": "Child-Pugh"
                else:
                    ok = adjacent(j - 1, j)
                if not ok:
                    break
                if lows[j] == "is" and j == i + 1:
                    j += 1
                    continue
                if not maybe_name(j):
                    break
                state[j] = 2
                j += 1
        if low in _RELATIONS and i > 0 and "(" in text[ends[i - 1]:toks[i][0]] and _short_gap(
            text[ends[i - 1]:toks[i][0]]
        ):
            # Xyz Abc (daughter)
            k = i - 1
            while (k >= 0 and k >= i - 3 and maybe_name(k) and (k == i - 1 or adjacent(k, k + 1))
                   and lows[k] not in _CUE_WORDS):
                state[k] = 2
                k -= 1

    # ambiguous names and initials next to a name become names (to a fixed point: "Will May Smith")
    changed = True
    while changed:
        changed = False
        for i in range(n):
            if state[i] == 2:
                continue
            is_initial = len(toks[i][2]) == 1 and toks[i][2].isupper()
            if state[i] != 1 and not is_initial:
                continue
            left = i > 0 and state[i - 1] == 2 and adjacent(i - 1, i)
            right = i + 1 < n and state[i + 1] == 2 and adjacent(i, i + 1)
            if (state[i] == 1 and (left or right)) or (is_initial and left and right):
                state[i] = 2
                changed = True
            elif is_initial and right and i > 0 and lows[i - 1] in _TITLES:
                state[i] = 2
                changed = True
    for i in range(n):
        if state[i] == 2:
            spans.append(PhiSpan(toks[i][0], ends[i], "[NAME]"))

    if known.phrases:
        spans += _phrase_spans(text, toks, lows, ends, known)
    return spans


def _phrase_spans(
    text: str, toks: list[tuple[int, int, str]], lows: list[str], ends: list[int], known: _Known
) -> list[PhiSpan]:
    """Known identifiers as token sequences ("568 Hills Branch Unit 86", "a.b@x.org"), any separators
    of at most 3 characters between tokens; addresses also match by a prefix of >= 2 tokens."""
    spans: list[PhiSpan] = []
    first: dict[str, list[tuple[tuple[str, ...], str, bool]]] = {}
    for ph in known.phrases:
        first.setdefault(ph[0][0], []).append(ph)
    n = len(toks)
    for i, low in enumerate(lows):
        for words, tag, prefix_ok in first.get(low, ()):
            k = 1
            while (k < len(words) and i + k < n and lows[i + k] == words[k]
                   and _short_gap(text[ends[i + k - 1]:toks[i + k][0]])):
                k += 1
            if k == len(words) or (prefix_ok and k >= 2):
                spans.append(PhiSpan(toks[i][0], ends[i + k - 1], tag))
    return spans


def _merge(spans: list[PhiSpan], protected: list[tuple[int, int]]) -> list[PhiSpan]:
    """Union of overlapping spans (privacy first: never leave part of a hit); tag of the longest."""
    if protected:
        spans = [sp for sp in spans if not any(ps <= sp.start and sp.end <= pe for ps, pe in protected)]
    if not spans:
        return []
    spans.sort(key=lambda sp: (sp.start, -sp.end))
    out: list[PhiSpan] = []
    cur_s, cur_e, best = spans[0].start, spans[0].end, spans[0]
    for sp in spans[1:]:
        if sp.start < cur_e:
            cur_e = max(cur_e, sp.end)
            if (sp.end - sp.start, -_TAG_PRIORITY[sp.tag]) > (best.end - best.start, -_TAG_PRIORITY[best.tag]):
                best = sp
        else:
            out.append(PhiSpan(cur_s, cur_e, best.tag))
            cur_s, cur_e, best = sp.start, sp.end, sp
    out.append(PhiSpan(cur_s, cur_e, best.tag))
    return out


def _spans(text: str, known: _Known) -> list[PhiSpan]:
    protected = [m.span() for m in _TAG_RE.finditer(text)]
    spans = _pattern_spans(text)
    spans += _name_and_phrase_spans(text, known)
    if known.digits:
        spans += _digit_spans(text, known)
    return _merge(spans, protected)


def find_phi_spans(text: str, known_identifiers: Iterable[str] = ()) -> list[PhiSpan]:
    """Identifier spans that ``scrub_text`` replaces in one pass (sorted, non-overlapping)."""
    return _spans(text, _prepare_known(known_identifiers))


def _replace(text: str, spans: list[PhiSpan]) -> str:
    parts: list[str] = []
    pos = 0
    for sp in spans:
        parts.append(text[pos:sp.start])
        parts.append(sp.tag)
        pos = sp.end
    parts.append(text[pos:])
    return "".join(parts)


def _scrub(text: str, known: _Known) -> str:
    # one pass; idempotence (tags are protected, spans are unions) is checked by the property tests
    spans = _spans(text, known)
    return _replace(text, spans) if spans else text


def scrub_text(text: str | None, known_identifiers: Iterable[str] = ()) -> str | None:
    """Free text with direct identifiers replaced by typed tags ([NAME], [PHONE], [EMAIL], [SSN],
    [MRN], [DATE], [ADDRESS], [ID], [URL], [IP]; ages over 89 by [AGE90+]).

    Sources of hits: ``known_identifiers`` (the patient's own names, MRN, phone, address ... from
    structured data; matched case-insensitively on word boundaries, names token by token and with
    Synthea-style trailing digits removed, numbers digit by digit whatever the separators),
    ``PHI_PATTERNS``, and the Faker en_US names dictionary for capitalized tokens (common-word names
    only next to another name, a title or a relation word). Idempotent; None stays None.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"scrub_text expects str or None, got {type(text).__name__}")
    return _scrub(text, _prepare_known(known_identifiers))


class Scrubber:
    """``scrub_text`` with one fixed list of known identifiers prepared once (e.g. every patient of a
    delivery), for scrubbing many texts: ``Scrubber(ids)(text)``. ``repr`` never shows identifiers."""

    def __init__(self, known_identifiers: Iterable[str] = ()):
        self._known = _prepare_known(list(known_identifiers))

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        return _scrub(str(text), self._known)

    def __repr__(self) -> str:
        return f"Scrubber(<{len(self._known.kinds)} identifiers hidden>)"


def _known_key(value: object) -> tuple[str, ...]:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(str(v) for v in value if not (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))))
    return (str(value),)


def scrub_series(texts: pd.Series, known: pd.Series | None = None) -> pd.Series:
    """``scrub_text`` per row; ``known`` (same index) holds each row's identifiers (list or str).

    Missing texts stay missing. The known identifiers of a patient are prepared once per distinct list.
    """
    if known is not None and not known.index.equals(texts.index):
        raise ValueError("scrub_series: known must share the index of texts")
    cache: dict[tuple[str, ...], _Known] = {}
    out = []
    known_values = known.tolist() if known is not None else [None] * len(texts)
    for text, kv in zip(texts.tolist(), known_values, strict=True):
        if text is None or text is pd.NA or (isinstance(text, float) and math.isnan(text)):
            out.append(text)
            continue
        key = _known_key(kv)
        prepared = cache.get(key)
        if prepared is None:
            prepared = cache[key] = _prepare_known(key)
        out.append(_scrub(str(text), prepared))
    return pd.Series(out, index=texts.index, dtype=object)


# --------------------------------------------------------------------------------------------------
# WFDB comments and leak scanning
# --------------------------------------------------------------------------------------------------

_ID_KEYS = frozenset("""
patient patient_name patientname name pt full_name fullname mrn medical_record_number record_number
dob date_of_birth birthdate birth_date born ssn social_security_number phone phone_number telephone tel
address email patient_id
""".split())
# last word before a colon, for keys after the first one ("... date of birth: ..." -> "birth")
_ID_KEY_WORDS = _ID_KEYS | frozenset("birth number id".split())
_FIRST_KEY_RE = re.compile(r"<?([A-Za-z][A-Za-z _./-]{0,30}?)>?\s*[:=]")
_ANY_KEY_RE = re.compile(r"<?([A-Za-z][A-Za-z_]*)>?\s*[:=]")


def _norm_key(key: str) -> str:
    return re.sub(r"[\s./-]+", "_", key.strip().lower())


def _is_pure_identifier_line(line: str) -> bool:
    """True if the line starts with an identifier key ("patient:", "mrn:", "dob:" ...) and every
    other "key:" in it is one too (values are identifiers by construction)."""
    stripped = line.strip().lstrip("#").strip()
    first = _FIRST_KEY_RE.match(stripped)
    if not first or _norm_key(first.group(1)) not in _ID_KEYS:
        return False
    return all(_norm_key(k.group(1)) in _ID_KEY_WORDS for k in _ANY_KEY_RE.finditer(stripped[first.end():]))


def deidentify_wfdb_comments(comments: list[str], known_identifiers: Iterable[str] = ()) -> list[str]:
    """WFDB header comments with identifier-only lines ("patient: ...", "mrn: ...", "dob: ...")
    dropped and every other line scrubbed; lines left with nothing but tags are dropped too."""
    known = _prepare_known(known_identifiers)
    out: list[str] = []
    for line in comments:
        if _is_pure_identifier_line(line):
            continue
        scrubbed = _scrub(line, known)
        if scrubbed != line and not re.search(r"[^\W_]", _TAG_RE.sub("", scrubbed)):
            continue
        out.append(scrubbed)
    return out


def find_identifier_hits(text: str, identifiers: Iterable[str]) -> list[str]:
    """Leak scan: the KIND ("name", "phone", "ssn", "mrn", "id", "date", "address", "email", ...) of
    each identifier that still occurs in ``text`` — case-folded on word boundaries, names token by
    token, numbers digits-only whatever the separators. Values are never returned."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    text = _TAG_RE.sub(" ", str(text))
    hits: list[str] = []
    if isinstance(identifiers, str):
        identifiers = [identifiers]
    for ident in identifiers:
        known = _prepare_known([ident])
        if known.empty:
            continue
        kind = known.kinds[0][1]
        if _name_and_phrase_spans_known_only(text, known) or (known.digits and _digit_spans(text, known)):
            hits.append(kind)
    return hits


def _name_and_phrase_spans_known_only(text: str, known: _Known) -> bool:
    """Whether any known name token or known phrase occurs (no dictionary, no context rules)."""
    toks = [(m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]
    bases = [_strip_possessive(t[2]) for t in toks]
    lows = [b.casefold() for b in bases]
    if known.names:
        for low in lows:
            if low in known.names or _TRAILING_DIGITS_RE.sub("", low) in known.names:
                return True
    if known.phrases:
        ends = [t[0] + len(b) for t, b in zip(toks, bases, strict=True)]
        return bool(_phrase_spans(text, toks, lows, ends, known))
    return False
