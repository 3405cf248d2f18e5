"""`twin-pipeline similar`: neighbours from the warehouse, filters, and the suppressed summary."""

from __future__ import annotations

import duckdb
import pytest

from twin_pipeline.cli import main
from twin_pipeline.commands.similar import parse_filters
from twin_pipeline_tests.lib.test_similarity import make_twins


@pytest.fixture()
def warehouse(tmp_path):
    twins = make_twins(300, seed=5)
    twins["completeness"] = 0.8
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema twin")
    con.register("t", twins)
    con.execute("create table twin.patient_twin as select * from t")
    con.close()
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "hospital_a.yaml").write_text("site_id: hospital_a\nsmall_cell_threshold: 7\n")
    return {"db": str(db), "sites": str(sites), "twins": twins}


def test_similar_prints_k_neighbours_of_the_same_site_and_a_suppressed_summary(warehouse, capsys):
    twins = warehouse["twins"]
    pid = twins.loc[twins["site_id"] == "hospital_a", "person_id"].iat[0]
    rc = main(["similar", pid, "-k", "12", "--same-site", "--filter", "sex=F,M", "--format", "csv",
               "--warehouse", warehouse["db"], "--sites-dir", warehouse["sites"]])
    assert rc == 0
    out = capsys.readouterr().out
    neighbours, summary = out.strip().split("\n\n")
    lines = neighbours.splitlines()
    assert lines[0] == "person_id,site_id,distance" and len(lines) == 13
    assert all(line.split(",")[1] == "hospital_a" for line in lines[1:])
    assert pid not in neighbours
    rows = [r.split(",") for r in summary.splitlines()[1:]]
    for therapy, n, n_out, *_ in rows:  # threshold 7 from the site YAML
        assert n == "<7" or int(n) >= 7
        assert n_out == "<7" or int(n_out) >= 7
    assert rows[-1][0] == "total" and rows[-1][1] == "12"


def test_similar_rejects_bad_input(warehouse, capsys):
    assert main(["similar", "Pnobody", "--warehouse", warehouse["db"]]) == 1
    pid = warehouse["twins"]["person_id"].iat[0]
    assert main(["similar", pid, "--filter", "zip3=021", "--warehouse", warehouse["db"]]) == 2
    assert main(["similar", pid, "--warehouse", warehouse["db"] + ".missing"]) == 2
    err = capsys.readouterr().err
    assert "unknown filter" in err and "Pnobody" not in err


def test_parse_filters():
    assert parse_filters(["age_band=50-54,55-59", "sex=F"]) == {"age_band": ["50-54", "55-59"], "sex": ["F"]}
    with pytest.raises(ValueError):
        parse_filters(["age_band"])
