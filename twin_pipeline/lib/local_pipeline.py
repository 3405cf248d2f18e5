"""The library path the Dagster assets take (reader → deid → harmonize → interview scores), without
Dagster or a warehouse, for benchmarks and tests that need twin inputs from a landing folder.

Waveform features are not computed here (`TwinInputs.waveforms` is empty).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from twin_pipeline.lib import deid as deid_lib
from twin_pipeline.lib import deid_tables
from twin_pipeline.lib import harmonize as hz
from twin_pipeline.lib.interviews import interview_scores
from twin_pipeline.lib.twin import TwinInputs
from twin_pipeline.sources.landing import Quarantine, find_deliveries, load_site_config
from twin_pipeline.sources.redcap import read_interviews
from twin_pipeline.sources.synthea_csv import EHR_TABLES, read_ehr

_TABLES = ("person", "visit", "condition", "measurement", "drug", "procedure", "interview")


def twin_inputs_from_landing(
    landing: Path,
    sites_dir: Path,
    key: deid_lib.DeidKey,
    scratch: Path,
    *,
    restricted_zip3: set[str] | None = None,
) -> TwinInputs:
    """Every complete delivery under `landing`, de-identified and harmonized, as `TwinInputs`.

    `scratch` receives quarantine files; `restricted_zip3` defaults to the committed Safe Harbor list.
    """
    if restricted_zip3 is None:
        restricted_zip3 = deid_lib.load_restricted_zip3(hz.default_vocab_dir() / "restricted_zip3.csv")
    vocab = hz.load_vocabulary()
    acc: dict[str, list[pd.DataFrame]] = {k: [] for k in _TABLES}
    for d in find_deliveries(Path(landing)):
        site = load_site_config(Path(sites_dir), d.site_id)
        q = Quarantine(Path(scratch), d.site_id, d.delivery_id)
        load = read_ehr(d.path, site, d.delivery_id, q)
        t = deid_tables.deidentify_ehr({x: load.tables[x].frame for x in EHR_TABLES}, key=key, site_id=d.site_id,
                                       delivery_id=d.delivery_id, restricted_zip3=restricted_zip3)
        iv = read_interviews(d.path, site, d.delivery_id, q)
        iv_df = deid_tables.deidentify_interviews(iv.frame, iv.fields, key=key, site_id=d.site_id,
                                                  delivery_id=d.delivery_id,
                                                  known=deid_tables.known_identifiers(load.tables["patients"].frame))
        meas, _, _ = hz.harmonize_measurements(t["observation"], vocab, local_lab_codes=site.local_lab_codes,
                                               unit_alias=site.unit_alias)
        acc["person"].append(hz.harmonize_person(t["person"]))
        acc["visit"].append(hz.harmonize_visits(t["visit"]))
        acc["condition"].append(hz.harmonize_conditions(t["condition"], vocab))
        acc["measurement"].append(meas)
        acc["drug"].append(hz.harmonize_drugs(t["medication"], vocab))
        acc["procedure"].append(hz.harmonize_procedures(t["procedure"], vocab))
        acc["interview"].append(interview_scores(iv_df))
    f = {k: pd.concat(v, ignore_index=True) for k, v in acc.items()}
    return TwinInputs(person=f["person"], condition=f["condition"], measurement=f["measurement"], drug=f["drug"],
                      procedure=f["procedure"], interview=f["interview"], waveforms={}, visit=f["visit"])


def truth_by_pseudonym(truth_dir: Path, key: deid_lib.DeidKey) -> pd.DataFrame:
    """Generator ground truth (`<truth_dir>/<site>/patients.csv`) keyed by the pipeline's pseudonym.

    For evaluation code only: the truth files hold site-local patient ids."""
    frames = [pd.read_csv(p, dtype={"patient_id": str}) for p in sorted(Path(truth_dir).glob("*/patients.csv"))]
    t = pd.concat(frames, ignore_index=True)
    t["person_id"] = [deid_lib.pseudonym(key, s, pid) for s, pid in zip(t["site_id"], t["patient_id"])]
    return t
