"""Twin assembly on a generated cohort: provenance, phenotypes, versions kept in a history table."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib import deid as deid_lib
from twin_pipeline.lib import local_pipeline
from twin_pipeline.lib.local_pipeline import twin_inputs_from_landing
from twin_pipeline.lib.phenotype import PROBABILITY_COLUMNS
from twin_pipeline.lib.twin import (
    MODEL_FEATURES,
    PROVENANCE_COLUMNS,
    TwinInputs,
    append_history,
    build_twins,
    history_problems,
    twin_versions,
    twins_as_of,
)
from twin_pipeline_tests.conftest import TEST_SECRET


def omop_inputs(landing: Path, sites_dir: Path, scratch: Path) -> TwinInputs:
    """The library path the Dagster assets take (reader -> deid -> harmonize), without waveforms."""
    key = deid_lib.DeidKey.from_secret(TEST_SECRET, max_shift_days=120)
    return twin_inputs_from_landing(landing, sites_dir, key, scratch, restricted_zip3=set())


def truth_by_pseudonym(truth_dir: Path) -> pd.DataFrame:
    return local_pipeline.truth_by_pseudonym(truth_dir, deid_lib.DeidKey.from_secret(TEST_SECRET, max_shift_days=120))


@pytest.fixture(scope="module")
def tiny_inputs(tiny_cohort, tmp_path_factory) -> TwinInputs:
    return omop_inputs(tiny_cohort["landing"], tiny_cohort["sites"], tmp_path_factory.mktemp("q"))


def test_twins_have_one_row_per_patient_with_phenotypes_and_provenance(tiny_inputs):
    twins = build_twins(tiny_inputs, twin_version="v1", built_at=pd.Timestamp("2026-12-01"))
    persons = tiny_inputs.person.drop_duplicates(["site_id", "person_id"])
    assert len(twins) == len(persons)
    assert not twins.duplicated(["site_id", "person_id"]).any()
    assert set(MODEL_FEATURES) <= set(twins.columns)
    probs = twins[PROBABILITY_COLUMNS].to_numpy()
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    assert twins["completeness"].between(0, 1).all()
    assert set(PROVENANCE_COLUMNS) <= set(twins.columns)
    # every twin traces back to the deliveries its person rows came from, with row counts
    assert twins["prov_ehr_person"].notna().all()
    n_from_prov = twins["prov_ehr_person"].str.split(";").str.len()
    assert (n_from_prov == twins["n_deliveries"]).all()
    labs_rows = twins["prov_ehr_labs"].fillna("").map(
        lambda s: sum(int(x.split(":")[1]) for x in s.split(";") if x))
    assert (labs_rows == twins["n_measurements"]).all()
    assert (twins["n_visits"] > 0).all()


def _frame(version: str, built: str, value: float, extra: bool = False) -> pd.DataFrame:
    df = pd.DataFrame({
        "site_id": ["s1", "s1", "s2"], "person_id": ["P1", "P2", "P3"], "crp_mg_l": [value, 2.0, 3.0],
        "twin_version": version, "built_at": pd.Timestamp(built), "last_delivery_id": "2026-10-01",
        "prov_ehr_person": "2026-10-01:1", "p_copd": [0.1, 0.9, 0.5],
    })
    if extra:
        df["new_feature"] = [1.0, 2.0, 3.0]
    return df


def test_history_keeps_every_version_and_answers_as_of_queries():
    conn = duckdb.connect()
    append_history(conn, _frame("v1", "2026-11-01", 5.0))
    append_history(conn, _frame("v2", "2026-11-08", 9.0, extra=True))  # schema grew
    append_history(conn, _frame("v2", "2026-11-08", 9.5, extra=True))  # retried run: replaces its own rows
    versions = twin_versions(conn)
    assert versions["twin_version"].tolist() == ["v1", "v2"]
    assert versions["twins"].tolist() == [3, 3]
    v1 = twins_as_of(conn, "v1", person_id="P1")
    assert len(v1) == 1 and v1["crp_mg_l"].iat[0] == 5.0
    assert "new_feature" not in v1.columns  # v1 looks as it was built
    latest = twins_as_of(conn, person_id="P1")
    assert latest["crp_mg_l"].iat[0] == 9.5 and latest["twin_version"].iat[0] == "v2"
    assert history_problems(conn, "v2", 3) == {"duplicate_patient_versions": 0, "row_count_mismatch": 0,
                                               "probabilities_out_of_range": 0, "untraceable_twins": 0}
    with pytest.raises(LookupError):
        twins_as_of(conn, "v9")


def test_history_problems_detect_broken_versions():
    conn = duckdb.connect()
    bad = _frame("v1", "2026-11-01", 5.0)
    bad.loc[0, "p_copd"] = 1.5
    bad.loc[1, "prov_ehr_person"] = None
    append_history(conn, bad)
    conn.execute("insert into twin.patient_twin_history select * from twin.patient_twin_history where person_id = 'P3'")
    problems = history_problems(conn, "v1", 3)
    assert problems == {"duplicate_patient_versions": 1, "row_count_mismatch": 1,
                        "probabilities_out_of_range": 1, "untraceable_twins": 1}
    with pytest.raises(ValueError):
        append_history(conn, pd.concat([_frame("a", "2026-01-01", 1.0), _frame("b", "2026-01-02", 1.0)]))
