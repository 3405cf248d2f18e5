"""Expectation suites as code: one function per dataset, each returning a GX `ExpectationSuite`.

Each function carries `suite_name` so Dagster definitions can declare the gate without importing
Great Expectations (slow) at load time; the suite itself is built when a check runs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from twin_pipeline.quality.expectations import PHI_PATTERNS, table_suite

LINEAGE = ["site_id", "delivery_id", "source_file", "source_row"]
PARTITION = ["site_id", "delivery_id"]
PSEUDONYM = r"^[PERDI][0-9a-f]{16}$"
ANY_PHI = "|".join(PHI_PATTERNS.values())
AGE_BANDS = [f"{a}-{a + 4}" for a in range(0, 90, 5)] + ["90+"]
ARMS = ["standard_care", "pulmonary_rehab", "colchicine", "antiviral"]


def suite(name: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        cached = lru_cache(maxsize=1)(fn)
        cached.suite_name = name  # type: ignore[attr-defined]
        return cached

    return wrap


def _regex_match(column: str, regex: str):
    import great_expectations as gx

    return gx.expectations.ExpectColumnValuesToMatchRegex(column=column, regex=regex)


# ---------------------------------------------------------------- deid


@suite("deid.person")
def deid_person():
    return table_suite(
        "deid.person",
        columns=["person_id", "gender", "race", "ethnicity", "year_of_birth", "age_years", "age_band", "zip3",
                 "birth_date", "death_date", *LINEAGE],
        unique=["person_id"],
        not_null=["person_id", "gender", "age_band", "zip3", *PARTITION],
        ranges={"age_years": (0, 90), "year_of_birth": (1900, 2030)},
        value_sets={"gender": ["M", "F", "U"], "age_band": AGE_BANDS},
        extra=[_regex_match("person_id", PSEUDONYM), _regex_match("zip3", r"^\d{3}$")],
    )


def _deid_event(name: str, date_col: str, extra_cols: list[str]):
    return table_suite(
        name,
        columns=["person_id", date_col, *extra_cols, *LINEAGE],
        not_null=["person_id", date_col, *PARTITION],
        extra=[_regex_match("person_id", PSEUDONYM)],
        min_rows=0,
    )


@suite("deid.visit")
def deid_visit():
    return table_suite(
        "deid.visit",
        columns=["visit_id", "person_id", "visit_start", "visit_end", "encounter_class", *LINEAGE],
        unique=["visit_id"],
        not_null=["visit_id", "person_id", "visit_start", *PARTITION],
        extra=[_regex_match("person_id", PSEUDONYM), _regex_match("visit_id", PSEUDONYM)],
        min_rows=0,
    )


@suite("deid.condition")
def deid_condition():
    return _deid_event("deid.condition", "condition_start", ["source_code", "description"])


@suite("deid.observation")
def deid_observation():
    return _deid_event("deid.observation", "observation_datetime", ["source_code", "value_source", "unit_source"])


@suite("deid.medication")
def deid_medication():
    return _deid_event("deid.medication", "drug_start", ["source_code", "description"])


@suite("deid.procedure")
def deid_procedure():
    return _deid_event("deid.procedure", "procedure_start", ["source_code", "description"])


@suite("deid.interview")
def deid_interview():
    return table_suite(
        "deid.interview",
        columns=["interview_id", "person_id", "interview_date", *LINEAGE],
        unique=["interview_id"],
        not_null=["interview_id", "person_id", "interview_date", *PARTITION],
        ranges={"fatigue_score": (0, 10), "dyspnea_mmrc": (0, 4), "morning_stiffness_min": (0, 600)},
        regex_absent={"notes": ANY_PHI},
        extra=[_regex_match("person_id", PSEUDONYM)],
        min_rows=0,
    )


@suite("deid.waveform_record")
def deid_waveform_record():
    return table_suite(
        "deid.waveform_record",
        columns=["record_id", "person_id", "device_kind", "device_id", "start_time", "duration_s",
                 "sampling_rate_hz", "deid_path", *LINEAGE],
        unique=["record_id"],
        not_null=["record_id", "person_id", "device_kind", "deid_path", *PARTITION],
        ranges={"duration_s": (0.1, 7 * 86400), "sampling_rate_hz": (1, 10000)},
        value_sets={"device_kind": ["ecg_monitor", "ventilator", "wearable"]},
        extra=[_regex_match("record_id", PSEUDONYM), _regex_match("person_id", PSEUDONYM)],
        min_rows=0,
    )


# ---------------------------------------------------------------- omop


@suite("omop.person")
def omop_person():
    return table_suite(
        "omop.person",
        columns=["person_id", "gender_concept_id", "year_of_birth", "age_band", "zip3", "care_site_id", *PARTITION],
        unique=["person_id"],
        not_null=["person_id", "gender_concept_id", "care_site_id", *PARTITION],
        value_sets={"gender_concept_id": [8507, 8532, 0]},
    )


@suite("omop.visit_occurrence")
def omop_visit_occurrence():
    return table_suite(
        "omop.visit_occurrence",
        columns=["visit_id", "person_id", "visit_start_datetime", "visit_concept", "visit_concept_id", *PARTITION],
        unique=["visit_id"],
        not_null=["visit_id", "person_id", "visit_start_datetime", "visit_concept_id"],
        value_sets={"visit_concept_id": [9201, 9202, 9203, 0]},
        min_rows=0,
    )


@suite("omop.condition_occurrence")
def omop_condition_occurrence():
    return table_suite(
        "omop.condition_occurrence",
        columns=["person_id", "condition_start_datetime", "condition_source_value", "condition_concept_code",
                 "phenotype_group", *LINEAGE],
        not_null=["person_id", "condition_start_datetime", "condition_source_value", "condition_concept_code"],
        min_rows=0,
    )


@suite("omop.measurement")
def omop_measurement():
    return table_suite(
        "omop.measurement",
        columns=["person_id", "measurement_datetime", "measurement_source_value", "measurement_concept_code",
                 "value_source_value", "unit_source_value", "value_as_number", "unit_concept_code", "range_flag",
                 *LINEAGE],
        not_null=["person_id", "measurement_datetime", "measurement_concept_code", "value_as_number"],
        value_sets={"range_flag": ["ok", "low", "high", "unchecked"]},
        min_rows=0,
    )


@suite("omop.drug_exposure")
def omop_drug_exposure():
    return table_suite(
        "omop.drug_exposure",
        columns=["person_id", "drug_exposure_start_datetime", "drug_source_value", "drug_concept_code",
                 "drug_class", "therapy_arm", *LINEAGE],
        not_null=["person_id", "drug_exposure_start_datetime", "drug_source_value", "drug_concept_code"],
        value_sets={"therapy_arm": ARMS},
        min_rows=0,
    )


@suite("omop.procedure_occurrence")
def omop_procedure_occurrence():
    return table_suite(
        "omop.procedure_occurrence",
        columns=["person_id", "procedure_datetime", "procedure_source_value", "procedure_concept_code",
                 "therapy_arm", *LINEAGE],
        not_null=["person_id", "procedure_datetime", "procedure_source_value"],
        value_sets={"therapy_arm": ARMS},
        min_rows=0,
    )


@suite("omop.observation")
def omop_observation():
    return table_suite(
        "omop.observation",
        columns=["person_id", "observation_datetime", "observation_source_value", "observation_concept_code",
                 "value_as_number", "source_kind", *LINEAGE],
        not_null=["person_id", "observation_datetime", "observation_concept_code", "source_kind"],
        value_sets={"source_kind": ["ehr", "interview"]},
        regex_absent={"value_as_string": ANY_PHI},
        min_rows=0,
    )


@suite("omop.device_exposure")
def omop_device_exposure():
    return table_suite(
        "omop.device_exposure",
        columns=["device_exposure_id", "person_id", "device_concept_code", "device_source_value",
                 "device_exposure_start_datetime", "device_exposure_end_datetime", *LINEAGE],
        unique=["device_exposure_id"],
        not_null=["device_exposure_id", "person_id", "device_concept_code", "device_exposure_start_datetime"],
        value_sets={"device_source_value": ["ecg_monitor", "ventilator", "wearable"]},
        extra=[_regex_match("person_id", PSEUDONYM), _regex_match("device_exposure_id", PSEUDONYM)],
        min_rows=0,
    )


@suite("omop.care_site")
def omop_care_site():
    return table_suite(
        "omop.care_site",
        columns=["care_site_id", "care_site_name", "country", "small_cell_threshold"],
        unique=["care_site_id"],
        not_null=["care_site_id", "care_site_name", "small_cell_threshold"],
        ranges={"small_cell_threshold": (0, 100)},
    )


# ---------------------------------------------------------------- features


@suite("features.ecg_record_features")
def features_ecg():
    import great_expectations.expectations as gxe

    return table_suite(
        "features.ecg_record_features",
        columns=["record_id", "person_id", "hr_mean_bpm", "hrv_sdnn_ms", "hrv_rmssd_ms", "quality_flag", *PARTITION],
        unique=["record_id"],
        not_null=["record_id", "person_id", "quality_flag"],
        ranges={"hr_mean_bpm": (20, 250), "hrv_sdnn_ms": (0, 1000), "hrv_rmssd_ms": (0, 2000),
                "hrv_pnn50_pct": (0, 100), "irregular_rr_fraction": (0, 1), "usable_fraction": (0, 1),
                "ecg_quality": (0, 1), "pleth_pulse_rate_bpm": (25, 230), "pleth_prv_sdnn_ms": (0, 1000),
                "pleth_quality": (0, 1), "hrv_lf_ms2": (0, None), "hrv_hf_ms2": (0, None), "hrv_lf_hf": (0, None)},
        value_sets={"quality_flag": ["ok", "low_quality", "no_signal"],
                    "pleth_quality_flag": ["ok", "low_quality", "no_signal"]},
        min_rows=0,
        extra=[  # a flag other than ok carries its reason; ok rows carry the headline feature;
            # at most half the records may have no usable signal (records processed ≥ 50 %)
            gxe.ExpectColumnValueLengthsToBeBetween(column="quality_reason", min_value=1,
                                                    row_condition='quality_flag!="ok"', condition_parser="pandas"),
            gxe.ExpectColumnValuesToNotBeNull(column="hr_mean_bpm", row_condition='quality_flag=="ok"',
                                              condition_parser="pandas"),
            gxe.ExpectColumnValuesToBeInSet(column="quality_flag", value_set=["ok", "low_quality"], mostly=0.5),
        ],
    )


@suite("features.ventilator_record_features")
def features_ventilator():
    import great_expectations.expectations as gxe

    return table_suite(
        "features.ventilator_record_features",
        columns=["record_id", "person_id", "resp_rate_bpm", "tidal_volume_insp_ml", "peep_cmh2o", "quality_flag",
                 *PARTITION],
        unique=["record_id"],
        not_null=["record_id", "person_id", "quality_flag"],
        ranges={"resp_rate_bpm": (2, 80), "tidal_volume_insp_ml": (20, 3000), "peep_cmh2o": (-5, 40),
                "pip_cmh2o": (0, 120), "ie_ratio": (0.05, 10), "dynamic_compliance_ml_cmh2o": (1, 500),
                "minute_ventilation_l_min": (0.5, 60), "alarm_fraction": (0, 1)},
        value_sets={"quality_flag": ["ok", "low_quality", "no_signal"]},
        min_rows=0,
        extra=[  # a flag other than ok carries its reason; ok rows carry the headline feature;
            # at most half the records may have no usable signal (records processed ≥ 50 %)
            gxe.ExpectColumnValueLengthsToBeBetween(column="quality_reason", min_value=1,
                                                    row_condition='quality_flag!="ok"', condition_parser="pandas"),
            gxe.ExpectColumnValuesToNotBeNull(column="resp_rate_bpm", row_condition='quality_flag=="ok"',
                                              condition_parser="pandas"),
            gxe.ExpectColumnValuesToBeInSet(column="quality_flag", value_set=["ok", "low_quality"], mostly=0.5),
        ],
    )


@suite("features.wearable_record_features")
def features_wearable():
    import great_expectations.expectations as gxe

    return table_suite(
        "features.wearable_record_features",
        columns=["record_id", "person_id", "resting_hr_bpm", "sedentary_fraction", "quality_flag", *PARTITION],
        unique=["record_id"],
        not_null=["record_id", "person_id", "quality_flag"],
        ranges={"resting_hr_bpm": (25, 200), "sedentary_fraction": (0, 1), "pulse_rate_bpm": (25, 230),
                "activity_counts_per_min": (0, None)},
        value_sets={"quality_flag": ["ok", "low_quality", "no_signal"]},
        min_rows=0,
        extra=[  # a flag other than ok carries its reason; ok rows carry the headline feature;
            # at most half the records may have no usable signal (records processed ≥ 50 %)
            gxe.ExpectColumnValueLengthsToBeBetween(column="quality_reason", min_value=1,
                                                    row_condition='quality_flag!="ok"', condition_parser="pandas"),
            gxe.ExpectColumnValuesToNotBeNull(column="sedentary_fraction", row_condition='quality_flag=="ok"',
                                              condition_parser="pandas"),
            gxe.ExpectColumnValuesToBeInSet(column="quality_flag", value_set=["ok", "low_quality"], mostly=0.5),
        ],
    )


@suite("features.interview_scores")
def features_interview_scores():
    return table_suite(
        "features.interview_scores",
        columns=["interview_id", "person_id", "interview_date", "symptom_burden", "items_answered", *PARTITION],
        unique=["interview_id"],
        not_null=["interview_id", "person_id", "items_answered"],
        ranges={"symptom_burden": (0, 100), "items_answered": (0, 5)},
        min_rows=0,
    )


# ---------------------------------------------------------------- twin + ml


TWIN_PHENOTYPE_PROBS = ["p_rheumatoid_arthritis", "p_osteoarthritis", "p_type1_diabetes", "p_type2_diabetes",
                        "p_asthma", "p_copd"]


@suite("twin.patient_twin")
def twin_patient_twin():
    return table_suite(
        "twin.patient_twin",
        columns=["site_id", "person_id", "age_years", "age_band", "completeness", "therapy", "twin_version",
                 "n_deliveries", "last_delivery_id", *TWIN_PHENOTYPE_PROBS, "phenotype_evidence",
                 "prov_ehr_person"],
        unique=["site_id", "person_id", "twin_version"],  # one row per patient per version
        not_null=["site_id", "person_id", "age_band", "completeness", "twin_version", "n_deliveries",
                  "last_delivery_id", "prov_ehr_person", "phenotype_evidence", *TWIN_PHENOTYPE_PROBS],
        ranges={"completeness": (0, 1), "age_years": (0, 90), "n_deliveries": (1, None), "bmi": (8, 120),
                **{c: (0, 1) for c in TWIN_PHENOTYPE_PROBS}},
        value_sets={"therapy": ARMS, "age_band": AGE_BANDS},
        extra=[_regex_match("person_id", PSEUDONYM)],
    )


@suite("ml.treatment_effect_model")
def ml_treatment_effect_model():
    return table_suite(
        "ml.treatment_effect_model",
        columns=["estimator", "mlflow_run_id", "model_uri", "n_train", "twin_version", "is_best",
                 "validation_metric", "val_tau_risk", "dr_policy_value_model", "frac_outside_overlap"],
        unique=["estimator", "twin_version"],
        not_null=["estimator", "mlflow_run_id", "model_uri", "n_train", "is_best", "val_tau_risk"],
        ranges={"n_train": (40, None), "val_tau_risk": (0, None), "frac_outside_overlap": (0, 1)},
        value_sets={"estimator": ["t_learner", "dr_learner", "x_learner"]},
    )


@suite("ml.treatment_simulation")
def ml_treatment_simulation():
    import great_expectations as gx

    return table_suite(
        "ml.treatment_simulation",
        columns=["person_id", "therapy", "mean", "p10", "p90", "prob_best", "recommended",
                 "recommendation_certainty", "outside_overlap", "estimator"],
        unique=["person_id", "therapy"],
        not_null=["person_id", "therapy", "mean", "p10", "p90", "prob_best"],
        ranges={"prob_best": (0, 1), "recommendation_certainty": (0, 1)},
        value_sets={"therapy": ARMS},
        extra=[
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(column_A="p90", column_B="p10", or_equal=True),
        ],
    )


@suite("ml.effect_evaluation")
def ml_effect_evaluation():
    return table_suite(
        "ml.effect_evaluation",
        columns=["estimator", "mlflow_run_id", "n_eval", "has_ground_truth", "dr_policy_value_model"],
        unique=["estimator"],
        not_null=["estimator", "mlflow_run_id", "n_eval", "has_ground_truth"],
        ranges={"n_eval": (0, None)},
    )


@suite("ml.champion_model")
def ml_champion_model():
    return table_suite(
        "ml.champion_model",
        columns=["registered_model", "version", "alias", "promoted", "estimator", "validation_metric",
                 "challenger_metric"],
        not_null=["registered_model", "version", "alias", "promoted", "estimator", "challenger_metric"],
        ranges={"version": (1, None)},
        value_sets={"alias": ["champion", "challenger"]},
    )
