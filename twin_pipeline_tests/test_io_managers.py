"""The warehouse IO manager: empty frames create typed tables; columns added later are accepted."""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd

from twin_pipeline.io_managers import WarehouseIOManager


def test_empty_frame_creates_a_typed_table_and_new_columns_are_added(tmp_path):
    db = str(tmp_path / "w.duckdb")
    frames = {
        "v1": pd.DataFrame({"a": pd.Series(dtype=object), "b": pd.Series(dtype="float64")}),
        "v2": pd.DataFrame({"a": ["x"], "b": [1.0], "c": [2]}),
    }
    version = {"name": "v1"}

    @dg.asset(key=["layer", "t"])
    def t() -> pd.DataFrame:
        return frames[version["name"]]

    assert dg.materialize([t], resources={"io_manager": WarehouseIOManager(database=db)}).success
    con = duckdb.connect(db, read_only=True)
    assert {r[0]: r[1] for r in con.execute("describe layer.t").fetchall()} == {"a": "VARCHAR", "b": "DOUBLE"}
    con.close()
    version["name"] = "v2"
    assert dg.materialize([t], resources={"io_manager": WarehouseIOManager(database=db)}).success
    con = duckdb.connect(db, read_only=True)
    assert con.execute("select a, b, c from layer.t").fetchall() == [("x", 1.0, 2)]
    con.close()


def test_a_column_first_stored_as_double_is_widened_to_text(tmp_path):
    """A flag column stored as all-NaN DOUBLE by an older version takes text later instead of failing."""
    db = str(tmp_path / "w.duckdb")
    frames = {"v1": pd.DataFrame({"k": [1], "flag": [float("nan")]}),
              "v2": pd.DataFrame({"k": [2], "flag": pd.Series(["ok"], dtype="string")})}
    version = {"name": "v1"}

    @dg.asset(key=["layer", "f"])
    def f() -> pd.DataFrame:
        return frames[version["name"]]

    assert dg.materialize([f], resources={"io_manager": WarehouseIOManager(database=db)}).success
    version["name"] = "v2"
    assert dg.materialize([f], resources={"io_manager": WarehouseIOManager(database=db)}).success
    con = duckdb.connect(db, read_only=True)
    assert {r[0]: r[1] for r in con.execute("describe layer.f").fetchall()}["flag"] == "VARCHAR"
    assert con.execute("select k, flag from layer.f").fetchall() == [(2, "ok")]
    con.close()
