"""`twin-pipeline simulate PERSON_ID`: simulated therapies beside small-cell-safe "patients like me"."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from twin_pipeline.commands.simulate import neighbour_outcomes, therapy_table
from twin_pipeline.lib import effects, simulate
from twin_pipeline.lib.twin import MODEL_FEATURES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    twins, _ = effects.generator_twins(240, seed=9)
    twins["twin_version"] = "v1"
    ens = effects.fit_ensemble(twins, MODEL_FEATURES, n_models=2, seed=1)
    sims = simulate.simulate_treatments(ens, twins[["site_id", "person_id"] + MODEL_FEATURES], noise_sd=30.0,
                                        n_draws=20, seed=2)
    sims["therapy"] = sims["therapy"].astype(str)
    db = tmp_path_factory.mktemp("wh") / "wh.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema twin; create schema ml")
    con.register("t", twins)
    con.register("s", sims)
    con.execute("create table twin.patient_twin as select * from t")
    con.execute("create table ml.treatment_simulation as select * from s")
    con.close()
    return {"twins": twins, "sims": sims, "db": db}


def test_small_groups_are_suppressed_with_their_complement():
    twins = pd.DataFrame({
        "person_id": [f"p{i}" for i in range(20)],
        "therapy": ["standard_care"] * 8 + ["pulmonary_rehab"] * 6 + ["colchicine"] * 3 + ["antiviral"] * 3,
        "outcome_6mwd_90d_m": np.arange(20, dtype=float) * 10,
    })
    nb = twins[["person_id"]]
    out = neighbour_outcomes(nb, twins, threshold=5)
    assert out.loc["colchicine", "n_like_me"] == "<5" and np.isnan(out.loc["colchicine", "like_me_mean"])
    assert out.loc["antiviral", "n_like_me"] == "<5"
    assert out.loc["standard_care", "n_like_me"] == "8"
    assert out.loc["standard_care", "like_me_mean"] == pytest.approx(35.0)
    # exactly one small group: the next smallest is hidden too, so the total does not reveal it
    twins.loc[[0, 1], "therapy"] = "antiviral"  # now 6 / 6 / 3 / 5: only colchicine is small
    out = neighbour_outcomes(nb, twins, threshold=5)
    assert out.loc["colchicine", "n_like_me"] == "<5"
    assert out.loc["antiviral", "n_like_me"] == "<5" and np.isnan(out.loc["antiviral", "like_me_mean"])
    assert out.loc["standard_care", "n_like_me"] == "6" and out.loc["pulmonary_rehab", "n_like_me"] == "6"


def test_therapy_table_matches_the_simulation(data):
    pid = data["twins"]["person_id"].iloc[17]
    table = therapy_table(pid, data["twins"], data["sims"], k=60, threshold=5)
    mine = data["sims"][data["sims"]["person_id"] == pid].set_index("therapy")
    assert list(table.index) == list(effects.ARMS)
    np.testing.assert_allclose(table["sim_mean"], mine.loc[list(effects.ARMS), "mean"])
    assert table["p_best"].sum() == pytest.approx(1.0)
    shown = table[table["n_like_me"].str.isdigit()]
    assert len(shown) and (shown["n_like_me"].astype(int) >= 5).all()


def test_cli_prints_the_table_and_no_other_identifier(data, capsys):
    from twin_pipeline.cli import main

    pid = data["twins"]["person_id"].iloc[3]
    rc = main(["simulate", pid, "--warehouse", str(data["db"]), "--k", "40", "--sites-dir", "/nonexistent"])
    out = capsys.readouterr().out
    assert rc == 0
    for arm in effects.ARMS:
        assert arm in out
    others = set(data["twins"]["person_id"]) - {pid}
    assert not any(o in out for o in others)
    assert main(["simulate", "nobody", "--warehouse", str(data["db"])]) == 1
