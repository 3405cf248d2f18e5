"""Harmonize de-identified tables into OMOP-CDM-shaped tables with standard codes and canonical units.

Vocabularies are the small crosswalks in `data/vocab/`; site conventions (local lab codes, unit
spellings) come from the site's YAML. Every row keeps its source code/value next to the standard
code/value. An unmapped code is kept with concept `unmapped` and counted; a value whose unit is not
known for its concept is rejected with a reason (never guessed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

UNMAPPED = "unmapped"
GENDER_CONCEPT = {"M": 8507, "F": 8532}


def default_vocab_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "vocab"


@dataclass
class Vocabulary:
    conditions: pd.DataFrame
    measurements: pd.DataFrame
    conversions: pd.DataFrame
    drugs: pd.DataFrame
    procedures: pd.DataFrame
    therapies: pd.DataFrame

    def conversion_table(self) -> dict[tuple[str, str], tuple[float, float, str]]:
        return {
            (r.loinc_code, r.from_unit): (float(r.factor), float(r.offset), r.to_unit)
            for r in self.conversions.itertuples()
        }


def load_vocabulary(vocab_dir: Path | None = None) -> Vocabulary:
    d = Path(vocab_dir or default_vocab_dir())
    read = lambda name: pd.read_csv(d / name, dtype=str, keep_default_na=False)  # noqa: E731
    conv = read("unit_conversions.csv")
    conv["factor"] = conv["factor"].astype(float)
    conv["offset"] = conv["offset"].astype(float)
    meas = read("measurements.csv")
    for col in ("min_plausible", "max_plausible", "typical_low", "typical_high"):
        if col in meas:  # empty = no range known for the concept (checks report it as unchecked)
            meas[col] = pd.to_numeric(meas[col].replace("", None), errors="raise").astype(float)
    return Vocabulary(
        conditions=read("conditions.csv"),
        measurements=meas,
        conversions=conv,
        drugs=read("drugs.csv"),
        procedures=read("procedures.csv"),
        therapies=read("therapies.csv"),
    )


def harmonize_person(person: pd.DataFrame) -> pd.DataFrame:
    out = person.copy()
    out["gender_concept_id"] = out["gender"].map(GENDER_CONCEPT).fillna(0).astype("int64")
    out["care_site_id"] = out["site_id"]
    return out


# Synthea CSV ENCOUNTERCLASS and FHIR Encounter.class (v3 ActCode) -> OMOP visit concept
# (as OHDSI ETL-Synthea maps them: 9201 inpatient, 9202 outpatient, 9203 emergency room)
VISIT_CONCEPTS = {
    "inpatient": ("inpatient", 9201), "imp": ("inpatient", 9201), "acute": ("inpatient", 9201),
    "snf": ("inpatient", 9201), "hospice": ("inpatient", 9201),
    "emergency": ("emergency", 9203), "emer": ("emergency", 9203), "urgentcare": ("emergency", 9203),
    "ambulatory": ("outpatient", 9202), "wellness": ("outpatient", 9202), "outpatient": ("outpatient", 9202),
    "amb": ("outpatient", 9202), "home": ("outpatient", 9202), "hh": ("outpatient", 9202),
    "virtual": ("outpatient", 9202), "vr": ("outpatient", 9202), "obsenc": ("outpatient", 9202),
}


def harmonize_visits(visit: pd.DataFrame) -> pd.DataFrame:
    """Encounters → `visit_occurrence` with an OMOP visit concept; the class as delivered is kept."""
    out = visit.rename(columns={"visit_start": "visit_start_datetime", "visit_end": "visit_end_datetime"}).copy()
    cls = out["encounter_class"].astype("string").str.lower().str.strip()
    out["visit_source_value"] = out["encounter_class"].astype("string")
    out["visit_concept"] = cls.map(lambda c: VISIT_CONCEPTS.get(c, (UNMAPPED, 0))[0] if isinstance(c, str) else UNMAPPED)
    out["visit_concept"] = out["visit_concept"].astype("string")
    out["visit_concept_id"] = cls.map(lambda c: VISIT_CONCEPTS.get(c, (UNMAPPED, 0))[1] if isinstance(c, str) else 0)
    out["visit_concept_id"] = out["visit_concept_id"].astype("int64")
    return out


def harmonize_conditions(cond: pd.DataFrame, vocab: Vocabulary) -> pd.DataFrame:
    m = vocab.conditions.set_index("source_code")
    out = cond.rename(
        columns={"condition_start": "condition_start_datetime", "condition_end": "condition_end_datetime",
                 "source_code": "condition_source_value"}
    ).copy()
    src = out["condition_source_value"].astype(str)
    icd = src.map(m["icd10cm_code"]).replace("", None)
    domain = src.map(m["domain_id"]) if "domain_id" in m else pd.Series("Condition", index=out.index)
    out["domain_id"] = domain.fillna(UNMAPPED).astype("string")
    out["condition_concept_code"] = icd.fillna(UNMAPPED).astype("string")
    out["condition_vocabulary"] = np.where(out["condition_concept_code"] == UNMAPPED, UNMAPPED, "ICD10CM")
    group = src.map(m["phenotype_group"]).astype("string")
    out["phenotype_group"] = group.mask(group == "")
    return out


def split_condition_domains(cond: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """OMOP puts a record in the table of its concept's domain: SNOMED findings whose domain is
    Observation (employment, education, social circumstances, "history of ...") leave
    `condition_occurrence` for `observation` (concept = the SNOMED code, a standard concept there)."""
    is_obs = (cond["domain_id"] == "Observation").to_numpy()
    conditions = cond[~is_obs].reset_index(drop=True)
    found = cond[is_obs]
    lineage = [c for c in ("site_id", "delivery_id", "source_file", "source_row") if c in found.columns]
    obs = pd.DataFrame({
        "person_id": found["person_id"].to_numpy(),
        "visit_id": found["visit_id"].to_numpy() if "visit_id" in found else None,
        "observation_datetime": pd.to_datetime(found["condition_start_datetime"]).to_numpy(),
        "observation_source_value": found["condition_source_value"].astype("string").to_numpy(),
        "observation_concept_code": found["condition_source_value"].astype("string").to_numpy(),
        "value_as_string": pd.array([None] * len(found), dtype="string"),
        "value_as_number": np.full(len(found), np.nan),
        "source_kind": "ehr",
        **{c: found[c].to_numpy() for c in lineage},
    })
    obs["observation_concept_code"] = obs["observation_concept_code"].astype("string")
    obs["observation_source_value"] = obs["observation_source_value"].astype("string")
    return conditions, obs


def condition_mapped(cond: pd.DataFrame) -> pd.Series:
    """A condition-source row has a standard concept: ICD-10-CM for Condition-domain SNOMED codes,
    the SNOMED code itself for Observation-domain findings; unknown codes are unmapped."""
    return (cond["condition_concept_code"] != UNMAPPED) | (cond["domain_id"] == "Observation")


def harmonize_measurements(
    obs: pd.DataFrame, vocab: Vocabulary, *, local_lab_codes: dict[str, str], unit_alias
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split EHR observations into (measurement, observation, rejected).

    Numeric rows become `measurement` with `value_as_number` in the concept's canonical unit; text rows
    become `observation`; numeric rows with an unknown unit for a mapped concept, or a non-numeric value,
    are rejected with `_reason`. `unit_alias(loinc, unit)` maps a site's unit spelling to UCUM.
    """
    meas_vocab = vocab.measurements.set_index("loinc_code")
    conv = vocab.conversion_table()
    df = obs.copy()
    numeric_type = df["value_type"].astype("string").str.lower().fillna("numeric") == "numeric"
    text = df[~numeric_type]
    df = df[numeric_type].copy()
    src = df["source_code"].astype(str)
    loinc = src.map(lambda c: local_lab_codes.get(c, c))
    mapped = loinc.isin(meas_vocab.index)
    value = pd.to_numeric(df["value_source"], errors="coerce")
    bad_value = value.isna()
    units = [unit_alias(lc, str(u)) if u is not None and not pd.isna(u) else "" for lc, u in zip(loinc, df["unit_source"])]
    units = pd.Series(units, index=df.index, dtype=object)
    factors = np.full(len(df), np.nan)
    offsets = np.zeros(len(df))
    canon = np.empty(len(df), dtype=object)
    for i, (lc, u, mp) in enumerate(zip(loinc, units, mapped)):
        if not mp:
            factors[i], canon[i] = 1.0, u
            continue
        hit = conv.get((lc, u))
        if hit is not None:
            factors[i], offsets[i], canon[i] = hit
    unknown_unit = mapped.values & np.isnan(factors)
    reasons = pd.Series(None, index=df.index, dtype=object)
    reasons[bad_value] = "non-numeric value for a numeric observation"
    reasons[~bad_value & unknown_unit] = "unknown unit for concept"
    rejected = df[reasons.notna()].copy()
    rejected["_reason"] = reasons[reasons.notna()]
    keep = reasons.isna().values
    out = df[keep].copy()
    out = out.rename(columns={"observation_datetime": "measurement_datetime", "source_code": "measurement_source_value",
                              "unit_source": "unit_source_value", "value_source": "value_source_value"})
    out["measurement_concept_code"] = np.where(mapped.values[keep], loinc.values[keep], UNMAPPED)
    out["value_as_number"] = value.values[keep] * factors[keep] + offsets[keep]
    out["unit_concept_code"] = canon[keep]
    out["value_as_number"] = out["value_as_number"].astype("float64")
    lo = out["measurement_concept_code"].map(meas_vocab["min_plausible"]).astype("float64").to_numpy()
    hi = out["measurement_concept_code"].map(meas_vocab["max_plausible"]).astype("float64").to_numpy()
    v = out["value_as_number"].to_numpy()
    with np.errstate(invalid="ignore"):
        out["range_flag"] = np.select(
            [np.isnan(lo) & np.isnan(hi), v < lo, v > hi], ["unchecked", "low", "high"], "ok"
        )
    for c in ("measurement_concept_code", "unit_concept_code", "range_flag"):
        out[c] = out[c].astype("string")
    obs_out = text.rename(
        columns={"observation_datetime": "observation_datetime", "source_code": "observation_source_value",
                 "value_source": "value_as_string", "unit_source": "unit_source_value"}
    ).copy()
    obs_out["observation_concept_code"] = obs_out["observation_source_value"]
    obs_out["value_as_number"] = np.nan
    obs_out["source_kind"] = "ehr"
    return out.reset_index(drop=True), obs_out.reset_index(drop=True), rejected.reset_index(drop=True)


def harmonize_drugs(med: pd.DataFrame, vocab: Vocabulary) -> pd.DataFrame:
    m = vocab.drugs.set_index("source_code")
    out = med.rename(columns={"drug_start": "drug_exposure_start_datetime", "drug_end": "drug_exposure_end_datetime",
                              "source_code": "drug_source_value"}).copy()
    src = out["drug_source_value"].astype(str)
    out["drug_concept_code"] = src.map(m["ingredient_code"]).fillna(UNMAPPED).astype("string")
    out["ingredient"] = src.map(m["ingredient_name"]).astype("string")
    out["drug_class"] = src.map(m["drug_class"]).astype("string")
    arm = src.map(m["therapy_arm"]).astype("string")
    out["therapy_arm"] = arm.mask(arm == "")
    return out


def harmonize_procedures(proc: pd.DataFrame, vocab: Vocabulary) -> pd.DataFrame:
    m = vocab.procedures.set_index("source_code")
    out = proc.rename(columns={"procedure_start": "procedure_datetime", "procedure_end": "procedure_end_datetime",
                               "source_code": "procedure_source_value"}).copy()
    src = out["procedure_source_value"].astype(str)
    out["procedure_concept_code"] = src.map(m["standard_code"]).fillna(UNMAPPED).astype("string")
    arm = src.map(m["therapy_arm"]).astype("string")
    out["therapy_arm"] = arm.mask(arm == "")
    return out


def harmonize_interviews(interviews: pd.DataFrame, answer_fields: list[str]) -> pd.DataFrame:
    """Interview answers → OMOP `observation` rows (one per interview × answered question), local codes."""
    lineage = ["site_id", "delivery_id", "source_file", "source_row"]
    present = [f for f in answer_fields if f in interviews.columns]
    long = interviews.melt(
        id_vars=["interview_id", "person_id", "interview_date", *lineage], value_vars=present,
        var_name="observation_source_value", value_name="value_as_number",
    )
    long = long[long["value_as_number"].notna()].copy()
    long["observation_concept_code"] = ("REDCAP:" + long["observation_source_value"]).astype("string")
    long = long.rename(columns={"interview_date": "observation_datetime"})
    long["source_kind"] = "interview"
    return long.reset_index(drop=True)


def mapping_coverage(frames: dict[str, tuple[pd.DataFrame, str]]) -> dict[str, float]:
    """Fraction of rows with a standard concept, per vocabulary: {name: (frame, concept column)}.

    The second element may also be a boolean Series ("row is mapped") aligned on the frame."""
    out = {}
    for name, (df, col) in frames.items():
        mapped = col if isinstance(col, pd.Series) else df[col] != UNMAPPED
        out[name] = float(mapped.mean()) if len(df) else 1.0
    return out


def mapping_counts(frames: dict[str, tuple[pd.DataFrame, object]]) -> dict[str, dict[str, int]]:
    """Rows, mapped rows and distinct unmapped source codes per vocabulary (aggregates only)."""
    out = {}
    for name, (df, col) in frames.items():
        mapped = col if isinstance(col, pd.Series) else df[col] != UNMAPPED
        out[name] = {"rows": int(len(df)), "mapped": int(mapped.sum()), "unmapped": int((~mapped).sum())}
    return out


@dataclass
class HarmonizedDelivery:
    """The `omop` tables of one site delivery, the measurement rows rejected with a reason, and
    the per-vocabulary mapping of the source rows (aggregates only leave through `coverage`)."""

    tables: dict[str, pd.DataFrame]
    rejected: pd.DataFrame
    mapped: dict[str, tuple[pd.DataFrame, object]]
    text_observations: int

    def coverage(self) -> dict[str, float]:
        return mapping_coverage(self.mapped)

    def counts(self) -> dict[str, dict[str, int]]:
        return mapping_counts(self.mapped)


def harmonize_ehr(
    deid: dict[str, pd.DataFrame], vocab: Vocabulary, *, local_lab_codes: dict[str, str], unit_alias,
    interview_fields: list[str] | None = None,
) -> HarmonizedDelivery:
    """`deid` EHR (+ interview) frames of one delivery → OMOP-shaped tables.

    Keys of `deid`: person, visit, condition, observation, medication, procedure and optionally
    interview. Condition-source findings of the Observation domain land in `observation`."""
    meas, obs_text, rejected = harmonize_measurements(
        deid["observation"], vocab, local_lab_codes=local_lab_codes, unit_alias=unit_alias
    )
    cond_all = harmonize_conditions(deid["condition"], vocab)
    conditions, cond_obs = split_condition_domains(cond_all)
    parts = [obs_text, cond_obs]
    if "interview" in deid and interview_fields is not None:
        parts.append(harmonize_interviews(deid["interview"], interview_fields))
    nonempty = [f for f in parts if len(f)]
    observation = pd.concat(nonempty, ignore_index=True) if nonempty else parts[-1].iloc[0:0].copy()
    if "value_as_string" not in observation:
        observation["value_as_string"] = pd.Series(dtype="string")
    observation["value_as_string"] = observation["value_as_string"].astype("string")
    drugs = harmonize_drugs(deid["medication"], vocab)
    tables = {
        "person": harmonize_person(deid["person"]),
        "visit_occurrence": harmonize_visits(deid["visit"]),
        "condition_occurrence": conditions,
        "measurement": meas,
        "drug_exposure": drugs,
        "procedure_occurrence": harmonize_procedures(deid["procedure"], vocab),
        "observation": observation,
    }
    mapped = {
        "conditions_snomed": (cond_all, condition_mapped(cond_all)),
        "labs_loinc": (meas, "measurement_concept_code"),
        "drugs_rxnorm": (drugs, "drug_concept_code"),
    }
    return HarmonizedDelivery(tables, rejected, mapped, len(obs_text))


DEVICE_CONCEPTS = {  # device kind -> (local concept code, name); no standard device vocabulary is loaded
    "ecg_monitor": ("TWIN:ecg_monitor", "Electrocardiographic monitor"),
    "ventilator": ("TWIN:ventilator", "Mechanical ventilator"),
    "wearable": ("TWIN:wearable", "Wearable PPG + accelerometer"),
}


def harmonize_devices(records: pd.DataFrame) -> pd.DataFrame:
    """De-identified waveform index → OMOP `device_exposure`: one row per recording, with the record id
    (the waveform record index), start/end and a local device concept."""
    out = pd.DataFrame(
        {
            "device_exposure_id": records["record_id"].astype("string"),
            "person_id": records["person_id"].astype("string"),
            "device_concept_code": records["device_kind"].map(lambda k: DEVICE_CONCEPTS.get(k, (UNMAPPED,))[0]).astype(
                "string"),
            "device_source_value": records["device_kind"].astype("string"),
            "unique_device_id": records["device_id"].astype("string"),
            "device_exposure_start_datetime": pd.to_datetime(records["start_time"]),
            "device_exposure_end_datetime": pd.to_datetime(records["start_time"])
            + pd.to_timedelta(records["duration_s"].astype("float64"), unit="s"),
            "sampling_rate_hz": records["sampling_rate_hz"].astype("float64"),
        }
    )
    for c in ("site_id", "delivery_id", "source_file", "source_row"):
        out[c] = records[c].values
    return out.reset_index(drop=True)


def care_sites(site_configs: list) -> pd.DataFrame:
    """One OMOP `care_site` row per site, from the sites' YAML conventions (no patient data)."""
    return pd.DataFrame(
        [
            {
                "care_site_id": c.site_id,
                "care_site_name": c.name or c.site_id,
                "country": c.country,
                "date_format": c.date_format,
                "small_cell_threshold": int(c.small_cell_threshold),
                "devices": ",".join(c.devices),
                "n_local_lab_codes": len(c.local_lab_codes),
            }
            for c in site_configs
        ],
        columns=["care_site_id", "care_site_name", "country", "date_format", "small_cell_threshold", "devices",
                 "n_local_lab_codes"],
    )
