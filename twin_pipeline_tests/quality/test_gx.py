"""GX suites as blocking Dagster asset checks: in-asset specs, gated outputs, standalone checks.

Every test materializes a tiny two-asset graph (gated upstream -> downstream) in one run and
asserts the gate's evaluation and whether the downstream asset was materialized.
"""

import duckdb
import numpy as np
import pandas as pd
import pytest

import dagster as dg
from twin_pipeline.quality.expectations import PHI_PATTERNS, table_suite
from twin_pipeline.quality.gx import (
    build_gx_asset_check,
    gate_check_name,
    gate_check_result,
    gate_check_spec,
    gated_output,
)
from twin_pipeline_tests.quality.conftest import (
    DELIVERY,
    PARTITION_EXPR,
    PARTITION_KEY,
    SITE,
    PartitionSafeDuckDBPandasIOManager,
    site_delivery_partitions,
)

FAKE_SSN = "987-65-4329"
PATIENTS = dg.AssetKey(["deid", "patients"])
PERSON = dg.AssetKey(["omop", "person"])


def patients_suite():
    """Contract of the toy deid.patients table."""
    return table_suite(
        "deid.patients",
        columns=["person_id", "age_years", "note"],
        unique=["person_id"],
        not_null=["person_id"],
        ranges={"age_years": (0, 90)},
        regex_absent={"note": "|".join(PHI_PATTERNS.values())},
    )


def _frame(bad: str | None = None, site: str = SITE, delivery: str = DELIVERY) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "person_id": ["a1", "b2", "c3"],
            "age_years": np.array([34.0, 57.0, 71.0]),
            "note": ["stable", "follow-up", "no complaints"],
            "site_id": site,
            "delivery_id": delivery,
        }
    )
    if bad == "range":
        df.loc[1, "age_years"] = 140.0
    elif bad == "ssn":
        df.loc[2, "note"] = f"patient SSN {FAKE_SSN}"
    return df


def _downstream(partitions_def=None, metadata=None):
    @dg.asset(key=PERSON, ins={"patients": dg.AssetIn(key=PATIENTS)},
              partitions_def=partitions_def, metadata=metadata)
    def person(patients: pd.DataFrame) -> pd.DataFrame:
        """One row per person (toy)."""
        return patients[["person_id"]].copy()

    return person


def _run(assets, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, raise_on_error=False, **kwargs)


def _evaluations(result) -> list:
    return list(result.get_asset_check_evaluations())


def _materialized(result, key: dg.AssetKey) -> bool:
    return any(
        e.event_specific_data.materialization.asset_key == key
        for e in result.get_asset_materialization_events()
    )


def _text_of(evaluation) -> str:
    return repr(evaluation.metadata) + repr(evaluation.description)


# ---------------------------------------------------------------- (a) in-asset gate, unpartitioned


def _in_asset_upstream(bad, *, gated: bool):
    @dg.asset(key=PATIENTS, check_specs=[gate_check_spec(PATIENTS, "deid.patients")])
    def patients():
        """One row per patient (toy)."""
        df = _frame(bad)
        if gated:
            yield from gated_output(PATIENTS, df, patients_suite())
        else:
            yield dg.Output(df)
            yield gate_check_result(PATIENTS, df, patients_suite())

    return patients


@pytest.mark.parametrize("gated", [False, True], ids=["output_then_check", "gated_output"])
def test_in_asset_gate_passes_and_downstream_runs(gated):
    result = _run([_in_asset_upstream(None, gated=gated), _downstream()])
    assert result.success
    (ev,) = _evaluations(result)
    assert ev.passed and ev.check_name == gate_check_name("deid.patients") == "gx_deid_patients"
    assert ev.metadata["success"].value is True
    assert ev.metadata["failed_expectations"].value == 0
    assert ev.metadata["row_count"].value == 3
    assert _materialized(result, PERSON)


@pytest.mark.parametrize("gated", [False, True], ids=["output_then_check", "gated_output"])
def test_in_asset_blocking_failure_stops_downstream(gated):
    instance = dg.DagsterInstance.ephemeral()
    result = _run([_in_asset_upstream("range", gated=gated), _downstream()], instance=instance)
    assert not result.success
    (ev,) = _evaluations(result)
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    assert ev.metadata["failed_expectations"].value == 1
    assert ev.metadata["failed_expectation_names"].value == (
        "expect_column_values_to_be_between(age_years)"
    )
    # the gated step fails, the downstream step is never started
    assert [e.step_key for e in result.get_step_failure_events()] == ["deid__patients"]
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "omop__person" not in started
    assert not _materialized(result, PERSON)
    # the run log says why the downstream step did not run
    messages = [r.user_message for r in instance.all_logs(result.run_id)]
    assert any("omop__person" in m and "Not executing" in m for m in messages)
    # output-then-check has already stored the failing frame; gated_output has not
    assert _materialized(result, PATIENTS) is (not gated)
    failure = result.get_step_failure_events()[0].event_specific_data.error
    expected = "Blocking quality gate failed" if gated else "blocking asset check failed"
    assert expected in failure.message


def test_warn_severity_reports_but_does_not_block():
    @dg.asset(key=PATIENTS, check_specs=[gate_check_spec(PATIENTS, "deid.patients")])
    def patients():
        df = _frame("range")
        yield from gated_output(
            PATIENTS, df, patients_suite(), severity=dg.AssetCheckSeverity.WARN
        )

    result = _run([patients, _downstream()])
    assert result.success
    (ev,) = _evaluations(result)
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN
    assert _materialized(result, PERSON)


def test_multi_asset_gate_spec():
    other = dg.AssetKey(["deid", "visits"])

    @dg.multi_asset(
        outs={"patients": dg.AssetOut(key=PATIENTS), "visits": dg.AssetOut(key=other)},
        check_specs=[gate_check_spec(PATIENTS, "deid.patients")],
    )
    def deid_tables():
        df = _frame("range")
        yield from gated_output(PATIENTS, df, patients_suite(), output_name="patients")
        yield dg.Output(df[["person_id"]], output_name="visits")

    result = _run([deid_tables, _downstream()])
    assert not result.success
    assert [e.passed for e in _evaluations(result)] == [False]
    assert not _materialized(result, PERSON)
    assert not _materialized(result, other)


# ------------------------------------------- privacy: a planted identifier never reaches metadata


@pytest.mark.parametrize("gated", [False, True], ids=["output_then_check", "gated_output"])
def test_phi_failure_metadata_has_no_identifier_value(gated):
    result = _run([_in_asset_upstream("ssn", gated=gated), _downstream()])
    assert not result.success
    (ev,) = _evaluations(result)
    assert ev.metadata["failed_expectation_names"].value == (
        "expect_column_values_to_not_match_regex(note)"
    )
    assert ev.metadata["unexpected_row_counts"].value == {
        "expect_column_values_to_not_match_regex(note)": 1
    }
    assert FAKE_SSN not in _text_of(ev)
    # nor anywhere in the run's event log (step failure messages included)
    for event in result.all_events:
        assert FAKE_SSN not in repr(event)
    assert not _materialized(result, PERSON)


# -------------------------------------- (b) site x delivery dynamic multi-partitions + DuckDB


def _partitioned_upstream(bad):
    pdef = site_delivery_partitions()

    @dg.asset(
        key=PATIENTS,
        partitions_def=pdef,
        metadata=PARTITION_EXPR,
        check_specs=[gate_check_spec(PATIENTS, "deid.patients", partitions_def=pdef)],
    )
    def patients(context: dg.AssetExecutionContext):
        keys = context.partition_key.keys_by_dimension
        df = _frame(bad, site=keys["site"], delivery=keys["delivery"])
        yield dg.Output(df)
        yield gate_check_result(PATIENTS, df, patients_suite())

    return patients, pdef


@pytest.mark.parametrize("bad", [None, "range"], ids=["pass", "fail"])
def test_partitioned_in_asset_gate_with_duckdb(bad, partitioned_instance, duckdb_path):
    patients, pdef = _partitioned_upstream(bad)
    result = _run(
        [patients, _downstream(pdef, PARTITION_EXPR)],
        instance=partitioned_instance,
        partition_key=PARTITION_KEY,
        resources={"io_manager": PartitionSafeDuckDBPandasIOManager(database=duckdb_path)},
    )
    (ev,) = _evaluations(result)
    assert ev.partition == str(PARTITION_KEY)  # "2024-01-15|site_a"
    assert ev.passed is (bad is None)
    assert result.success is (bad is None)
    assert _materialized(result, PERSON) is (bad is None)
    with duckdb.connect(duckdb_path, read_only=True) as con:
        sql = "select table_schema || '.' || table_name from information_schema.tables"
        tables = {row[0] for row in con.execute(sql).fetchall()}
        assert ("omop.person" in tables) is (bad is None)
        sql = "select count(*) from deid.patients where site_id = ?"
        n = con.execute(sql, [SITE]).fetchone()[0]
        assert n == 3  # output-then-check: the frame is stored even when the gate fails


def test_stock_duckdb_io_manager_fails_on_dynamic_multi_partitions(
    partitioned_instance, duckdb_path
):
    """Documents the Dagster 1.13 bug the PartitionSafe IO manager works around."""
    from dagster_duckdb_pandas import DuckDBPandasIOManager

    patients, pdef = _partitioned_upstream(None)
    result = _run(
        [patients],
        instance=partitioned_instance,
        partition_key=PARTITION_KEY,
        resources={"io_manager": DuckDBPandasIOManager(database=duckdb_path)},
    )
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    assert "instance is not available to load partitions" in repr(error)


# ----------------------------------------------------------- (c) standalone build_gx_asset_check


def _plain_upstream(bad, partitions_def=None, metadata=None):
    @dg.asset(key=PATIENTS, partitions_def=partitions_def, metadata=metadata)
    def patients(context: dg.AssetExecutionContext) -> pd.DataFrame:
        """One row per patient (toy)."""
        if context.has_partition_key:
            keys = context.partition_key.keys_by_dimension
            return _frame(bad, site=keys["site"], delivery=keys["delivery"])
        return _frame(bad)

    return patients


@pytest.mark.parametrize("bad", [None, "range", "ssn"])
def test_standalone_check_unpartitioned_blocks_downstream(bad, duckdb_path):
    check = build_gx_asset_check(PATIENTS, patients_suite)
    assert check.check_keys == {dg.AssetCheckKey(PATIENTS, "gx_patients_suite")}
    result = _run(
        [_plain_upstream(bad), _downstream(), check],
        resources={"io_manager": PartitionSafeDuckDBPandasIOManager(database=duckdb_path)},
    )
    (ev,) = _evaluations(result)
    assert ev.passed is (bad is None)
    assert result.success is (bad is None)
    assert _materialized(result, PATIENTS)  # standalone: stored before it is checked
    assert _materialized(result, PERSON) is (bad is None)
    if bad:
        assert [e.step_key for e in result.get_step_failure_events()] == [
            "deid__patients_gx_patients_suite"
        ]
        assert FAKE_SSN not in _text_of(ev)


def test_standalone_check_name_follows_suite_name_attribute():
    def deid_patients():
        return patients_suite()

    deid_patients.suite_name = "deid.patients"
    check = build_gx_asset_check(PATIENTS, deid_patients)
    spec = gate_check_spec(PATIENTS, "deid.patients")
    assert check.check_keys == {dg.AssetCheckKey(PATIENTS, spec.name)}
    assert next(iter(check.check_specs)).blocking


@pytest.mark.parametrize("bad", [None, "range"], ids=["pass", "fail"])
def test_standalone_check_partitioned(bad, partitioned_instance, duckdb_path):
    pdef = site_delivery_partitions()
    upstream = _plain_upstream(bad, pdef, PARTITION_EXPR)
    check = build_gx_asset_check(upstream, patients_suite, name="gx_gate")  # pdef from asset
    # a second partition already in the warehouse with a bad row must not leak into this one
    partitioned_instance.add_dynamic_partitions("site", ["site_b"])
    io = PartitionSafeDuckDBPandasIOManager(database=duckdb_path)
    other = _run([_plain_upstream("range", pdef, PARTITION_EXPR)], instance=partitioned_instance,
                 partition_key=dg.MultiPartitionKey({"site": "site_b", "delivery": DELIVERY}),
                 resources={"io_manager": io})
    assert other.success
    result = _run(
        [upstream, _downstream(pdef, PARTITION_EXPR), check],
        instance=partitioned_instance,
        partition_key=PARTITION_KEY,
        resources={"io_manager": io},
    )
    (ev,) = _evaluations(result)
    assert ev.partition == str(PARTITION_KEY)
    assert ev.metadata["row_count"].value == 3  # only this partition's rows were loaded
    assert ev.passed is (bad is None)
    assert _materialized(result, PERSON) is (bad is None)
