"""Suite builders and the privacy-safe validator (plain GX, no Dagster)."""

import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.quality.expectations import (
    PHI_PATTERNS,
    GateResult,
    expectation_name,
    table_suite,
    validate_frame,
)

FAKE_SSN = "987-65-4329"


def _patients(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "person_id": [f"p{i:04d}" for i in range(n)],
            "visit": np.arange(n) % 3,
            "age_years": rng.integers(18, 89, n).astype(float),
            "sex": rng.choice(["F", "M"], n),
            "note": ["no identifiers here"] * n,
        }
    )


def _suite():
    return table_suite(
        "deid.patients",
        columns=["person_id", "visit", "age_years", "sex", "note"],
        unique=["person_id", "visit"],
        not_null=["person_id", "age_years"],
        ranges={"age_years": (0, 90)},
        value_sets={"sex": ["F", "M", "U"]},
        regex_absent={"note": "|".join(PHI_PATTERNS.values())},
        min_rows=5,
    )


def _types(suite) -> list[str]:
    return [e.expectation_type for e in suite.expectations]


def test_table_suite_builds_the_documented_expectations():
    suite = _suite()
    types = _types(suite)
    assert suite.name == "deid.patients"
    assert types.count("expect_column_to_exist") == 5
    for t in (
        "expect_table_columns_to_match_set",
        "expect_table_row_count_to_be_between",
        "expect_compound_columns_to_be_unique",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_match_regex",
    ):
        assert t in types, t
    match_set = next(e for e in suite.expectations if e.expectation_type.endswith("match_set"))
    assert match_set.exact_match is False
    between_type = "expect_column_values_to_be_between"
    between = next(e for e in suite.expectations if e.expectation_type == between_type)
    assert between.mostly == 1.0
    # one key column -> plain column uniqueness
    single = table_suite("t", columns=["a"], unique=["a"], min_rows=0)
    assert "expect_column_values_to_be_unique" in _types(single)
    assert "expect_table_row_count_to_be_between" not in _types(single)


def test_table_suite_rejects_bad_ranges():
    with pytest.raises(ValueError, match="no bound"):
        table_suite("t", columns=["a"], ranges={"a": (None, None)})
    with pytest.raises(ValueError, match="mostly"):
        table_suite("t", columns=["a"], ranges={"a": (0, 1, 0.0)})
    with pytest.raises(ValueError, match="columns"):
        table_suite("t", columns=[])


def test_validate_frame_passes_clean_frame():
    result = validate_frame(_patients(), _suite())
    assert isinstance(result, GateResult)
    assert result.success and result.failed == 0 and result.failed_expectations == []
    assert result.evaluated == len(_suite().expectations)
    assert result.row_count == 20 and result.suite_name == "deid.patients"


def test_validate_frame_names_failures_by_type_and_columns():
    df = _patients()
    df.loc[3, "age_years"] = 130.0  # out of range
    df.loc[4, "visit"] = df.loc[5, "visit"]  # duplicate compound key
    df.loc[4, "person_id"] = df.loc[5, "person_id"]
    df.loc[6, "sex"] = "X"  # not in set
    df = df.drop(columns=["note"])  # missing column
    result = validate_frame(df, _suite())
    assert not result.success
    assert set(result.failed_expectations) == {
        "expect_table_columns_to_match_set",
        "expect_column_to_exist(note)",
        "expect_column_values_to_be_between(age_years)",
        "expect_compound_columns_to_be_unique(person_id,visit)",
        "expect_column_values_to_be_in_set(sex)",
        "expect_column_values_to_not_match_regex(note)",  # raised: column missing
    }
    assert result.failed == 6
    assert result.errored == 1
    assert result.unexpected_counts["expect_column_values_to_be_between(age_years)"] == 1
    assert result.unexpected_counts["expect_column_values_to_be_in_set(sex)"] == 1
    assert result.unexpected_counts["expect_compound_columns_to_be_unique(person_id,visit)"] == 2


def test_mostly_triple_tolerates_a_fraction():
    df = _patients(20)
    df.loc[0, "age_years"] = 500.0  # 1 of 20 = 5 % out of range
    strict = table_suite("s", columns=["age_years"], ranges={"age_years": (0, 120)})
    loose = table_suite("l", columns=["age_years"], ranges={"age_years": (0, 120, 0.9)})
    assert not validate_frame(df, strict).success
    assert validate_frame(df, loose).success


def test_min_rows_fails_on_empty_frame():
    empty = _patients().iloc[0:0]
    result = validate_frame(empty, _suite())
    assert not result.success
    assert "expect_table_row_count_to_be_between" in result.failed_expectations


def test_phi_absence_failure_never_carries_the_value():
    df = _patients()
    df.loc[7, "note"] = f"call back, SSN {FAKE_SSN}, or mail jane.roe@example.org"
    result = validate_frame(df, _suite())
    assert result.failed_expectations == ["expect_column_values_to_not_match_regex(note)"]
    assert result.unexpected_counts == {"expect_column_values_to_not_match_regex(note)": 1}
    dumped = repr(asdict(result)) + str(result)
    assert FAKE_SSN not in dumped and "jane.roe" not in dumped
    assert "p0007" not in dumped  # nor the row's key


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("ssn 123-45-6789", True),
        ("phone (555) 123-4567", True),
        ("phone 555-123-4567", True),
        ("mail a.b@c.org", True),
        ("bp 120/80, hr 72, visit 2024-01-15", False),
    ],
)
def test_phi_patterns(text, hit):
    suite = table_suite("phi", columns=["t"], regex_absent={"t": "|".join(PHI_PATTERNS.values())})
    assert validate_frame(pd.DataFrame({"t": [text]}), suite).success is (not hit)


def test_cached_context_does_not_leak_results_between_frames():
    suite = _suite()
    bad = _patients()
    bad.loc[0, "age_years"] = -5.0
    assert not validate_frame(bad, suite).success
    assert validate_frame(_patients(), suite).success  # same batch id, fresh metrics
    assert not validate_frame(bad, suite).success


def test_expectation_name_uses_columns_only():
    assert expectation_name("expect_x", {"column": "a", "min_value": 1}) == "expect_x(a)"
    assert expectation_name("expect_y", {"column_A": "a", "column_B": "b"}) == "expect_y(a,b)"
    assert expectation_name("expect_t", {"value_set": ["secret"]}) == "expect_t"


def test_importing_quality_modules_does_not_import_gx():
    code = (
        "import sys, twin_pipeline.quality.gx, twin_pipeline.quality.expectations;"
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
