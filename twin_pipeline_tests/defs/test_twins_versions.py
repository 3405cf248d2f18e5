"""`twin/patient_twin` in Dagster: each run is a twin version; the history keeps the previous ones."""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource

from twin_pipeline.defs.twins.assets import HISTORY_CHECK, patient_twin
from twin_pipeline.io_managers import WarehouseIOManager
from twin_pipeline.lib.twin import twin_versions, twins_as_of
from twin_pipeline_tests.lib.test_twin import omop_inputs


def _load_warehouse(db: str, inputs) -> None:
    con = duckdb.connect(db)
    con.execute("create schema if not exists omop; create schema if not exists features")
    frames = {"omop.person": inputs.person, "omop.condition_occurrence": inputs.condition,
              "omop.measurement": inputs.measurement, "omop.drug_exposure": inputs.drug,
              "omop.procedure_occurrence": inputs.procedure, "omop.visit_occurrence": inputs.visit,
              "features.interview_scores": inputs.interview}
    for name, df in frames.items():
        con.register("f", df)
        con.execute(f"create or replace table {name} as select * from f")
        con.unregister("f")
    con.close()


def test_each_run_is_a_version_and_previous_versions_stay_queryable(tiny_cohort, tmp_path):
    inputs = omop_inputs(tiny_cohort["landing"], tiny_cohort["sites"], tmp_path / "q")
    db = str(tmp_path / "w.duckdb")
    _load_warehouse(db, inputs)
    resources = {"warehouse": DuckDBResource(database=db), "io_manager": WarehouseIOManager(database=db)}
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize([patient_twin], resources=resources, instance=instance)
    assert first.success
    checks = {e.check_name: e for e in first.get_asset_check_evaluations()}
    assert HISTORY_CHECK in checks and all(e.passed for e in checks.values())
    assert checks[HISTORY_CHECK].metadata["duplicate_patient_versions"].value == 0

    # a lab value changes in the warehouse; the next run builds a second version
    con = duckdb.connect(db)
    target = con.execute("select site_id, person_id from twin.patient_twin where crp_mg_l is not null "
                         "order by person_id limit 1").fetchone()
    old_crp = con.execute("select crp_mg_l from twin.patient_twin where person_id = ?", [target[1]]).fetchone()[0]
    con.execute("update omop.measurement set value_as_number = value_as_number + 100 "
                "where person_id = ? and measurement_concept_code = '1988-5'", [target[1]])
    con.close()
    second = dg.materialize([patient_twin], resources=resources, instance=instance)
    assert second.success and all(e.passed for e in second.get_asset_check_evaluations())

    con = duckdb.connect(db, read_only=True)
    n_persons = con.execute("select count(distinct site_id || person_id) from omop.person").fetchone()[0]
    current = con.execute("select twin_version, count(*) from twin.patient_twin group by 1").fetchall()
    assert current == [(second.run_id, n_persons)]  # current = the latest version only
    versions = twin_versions(con)
    assert versions["twin_version"].tolist() == [first.run_id, second.run_id]
    assert versions["twins"].tolist() == [n_persons, n_persons]
    v1 = twins_as_of(con, first.run_id, person_id=target[1])
    v2 = twins_as_of(con, second.run_id, person_id=target[1])
    assert v1["crp_mg_l"].iat[0] == old_crp  # what the twin looked like in version 1
    assert v2["crp_mg_l"].iat[0] > old_crp
    dup = con.execute("select count(*) from (select site_id, person_id, twin_version "
                      "from twin.patient_twin_history group by all having count(*) > 1)").fetchone()[0]
    assert dup == 0
    con.close()
    meta = second.get_asset_materialization_events()[0].materialization.metadata
    assert "reconciled_phenotype_counts" in meta
    # aggregates only: no pseudonym anywhere in the metadata
    assert target[1] not in str({k: getattr(v, "value", v) for k, v in meta.items()})
