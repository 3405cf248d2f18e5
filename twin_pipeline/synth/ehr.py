"""Turn the latent cohort into landing rows: Synthea-style EHR tables, interviews, waveform plans.

Rows keep real ``datetime`` objects here; ``generator`` formats them in the site's date formats and
splits them into deliveries by date. Every code comes from ``data/vocab`` (or the site's local lab
codes); the supporting evidence (labs, drugs, joint findings) follows the TRUE phenotype while the
condition rows carry the CODED (possibly wrong) diagnosis.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from twin_pipeline.synth.interviews import interview_note, joint_findings
from twin_pipeline.synth.sites import SiteProfile

EHR_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("Id", "BIRTHDATE", "DEATHDATE", "SSN", "DRIVERS", "PASSPORT", "PREFIX", "FIRST",
                 "LAST", "SUFFIX", "MAIDEN", "MARITAL", "RACE", "ETHNICITY", "GENDER", "BIRTHPLACE",
                 "ADDRESS", "CITY", "STATE", "COUNTY", "ZIP", "LAT", "LON", "HEALTHCARE_EXPENSES",
                 "HEALTHCARE_COVERAGE", "MRN", "PHONE"),
    "encounters": ("Id", "START", "STOP", "PATIENT", "ORGANIZATION", "PROVIDER", "PAYER",
                   "ENCOUNTERCLASS", "CODE", "DESCRIPTION", "BASE_ENCOUNTER_COST",
                   "TOTAL_CLAIM_COST", "PAYER_COVERAGE", "REASONCODE", "REASONDESCRIPTION"),
    "conditions": ("START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION"),
    "observations": ("DATE", "PATIENT", "ENCOUNTER", "CATEGORY", "CODE", "DESCRIPTION", "VALUE",
                     "UNITS", "TYPE"),
    "medications": ("START", "STOP", "PATIENT", "PAYER", "ENCOUNTER", "CODE", "DESCRIPTION",
                    "BASE_COST", "PAYER_COVERAGE", "DISPENSES", "TOTALCOST", "REASONCODE",
                    "REASONDESCRIPTION"),
    "procedures": ("START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION", "BASE_COST",
                   "REASONCODE", "REASONDESCRIPTION"),
}
# columns holding dates (site date_format) and datetimes (site datetime_format)
DATE_COLUMNS = {"patients": ("BIRTHDATE", "DEATHDATE"), "conditions": ("START", "STOP")}
DATETIME_COLUMNS = {"encounters": ("START", "STOP"), "observations": ("DATE",),
                    "medications": ("START", "STOP"), "procedures": ("START", "STOP")}

# Synthea encounter types (SNOMED CT); encounter codes are not part of the analysed vocabulary.
ENC_CHECKUP = ("ambulatory", "185349003", "Encounter for check up (procedure)")
ENC_SYMPTOM = ("ambulatory", "185345009", "Encounter for symptom")
ENC_EMERGENCY = ("emergency", "50849002", "Emergency room admission (procedure)")
ENC_INPATIENT = ("inpatient", "183452005", "Encounter Inpatient")
ENC_PROBLEM = ("ambulatory", "185347001", "Encounter for problem")
ENC_FOLLOWUP = ("ambulatory", "390906007", "Follow-up encounter")
ENC_OUTPATIENT_PROC = ("outpatient", "371883000", "Outpatient procedure")

# measurement value decimals by (LOINC, emitted unit)
_DECIMALS = {"2345-7": 0, "2160-0": 2, "4548-4": 1, "1988-5": 1, "11572-5": 1, "32218-0": 1,
             "1986-9": 2, "19926-5": 1, "8867-4": 0, "8480-6": 0, "8462-4": 0, "29463-7": 1,
             "8302-2": 1, "8310-5": 1, "59408-5": 0, "64098-7": 0}
_LOCAL_DECIMALS = {"mmol/l": 1, "umol/l": 0, "lbs": 1, "F": 1}
_LOCAL_DESCRIPTIONS = {"GLU": "GLUCOSE SERUM (LOCAL)", "CREA": "CREATININE SERUM (LOCAL)"}


@dataclass
class LandingRows:
    """All rows of one site before formatting: tables of dicts with ``datetime``/``date`` values."""

    tables: dict[str, list[dict]] = field(default_factory=lambda: {k: [] for k in EHR_COLUMNS})
    interviews: list[dict] = field(default_factory=list)
    waveforms: list[dict] = field(default_factory=list)


class _SiteEHR:
    """Row factory for one site (codes and descriptions looked up in the vocabulary)."""

    def __init__(self, profile: SiteProfile, vocab: dict[str, pd.DataFrame],
                 rng: np.random.Generator):
        self.profile = profile
        self.rng = rng
        self.rows = LandingRows()
        self.conditions = {r.source_code: r.source_name for r in vocab["conditions"].itertuples()}
        self.drugs = {r.source_code: r.source_name for r in vocab["drugs"].itertuples()}
        self.procedures = {r.source_code: r.source_name for r in vocab["procedures"].itertuples()}
        self.measurements = {r.loinc_code: r for r in vocab["measurements"].itertuples()}
        self.org = str(self._uuid())
        self.providers = [str(self._uuid()) for _ in range(6)]
        self.payers = [str(self._uuid()) for _ in range(4)]

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.rng.bytes(16), version=4)

    def encounter(self, pid: str, payer: str, start: dt.datetime, kind: tuple[str, str, str],
                  reason: str | None = None, stop: dt.datetime | None = None) -> dict:
        cls, code, desc = kind
        stop = stop or start + dt.timedelta(minutes=int(self.rng.integers(15, 61)))
        base = round(float(self.rng.uniform(80, 180)), 2)
        total = round(base * float(self.rng.uniform(1.0, 8.0)), 2)
        enc = {"Id": str(self._uuid()), "START": start, "STOP": stop, "PATIENT": pid,
               "ORGANIZATION": self.org, "PROVIDER": self.providers[int(self.rng.integers(0, 6))],
               "PAYER": payer, "ENCOUNTERCLASS": cls, "CODE": code, "DESCRIPTION": desc,
               "BASE_ENCOUNTER_COST": f"{base:.2f}", "TOTAL_CLAIM_COST": f"{total:.2f}",
               "PAYER_COVERAGE": f"{total * float(self.rng.uniform(0.5, 1.0)):.2f}",
               "REASONCODE": reason or "",
               "REASONDESCRIPTION": self.conditions[reason] if reason else ""}
        self.rows.tables["encounters"].append(enc)
        return enc

    def condition(self, enc: dict, code: str, stop: dt.date | None = None) -> None:
        self.rows.tables["conditions"].append({
            "START": enc["START"].date(), "STOP": stop, "PATIENT": enc["PATIENT"],
            "ENCOUNTER": enc["Id"], "CODE": code, "DESCRIPTION": self.conditions[code]})

    def observation(self, enc: dict, loinc: str, value: float) -> None:
        """One numeric observation; ``value`` is in the canonical unit of ``measurements.csv``."""
        m = self.measurements[loinc]
        code, unit, desc = loinc, m.canonical_unit, m.loinc_name
        decimals = _DECIMALS[loinc]
        if loinc in self.profile.local_units:
            code, unit, factor, offset = self.profile.local_units[loinc]
            value = value * factor + offset
            decimals = _LOCAL_DECIMALS.get(unit, decimals)
            desc = _LOCAL_DESCRIPTIONS.get(code, desc)
        self.rows.tables["observations"].append({
            "DATE": enc["START"], "PATIENT": enc["PATIENT"], "ENCOUNTER": enc["Id"],
            "CATEGORY": m.category, "CODE": code, "DESCRIPTION": desc,
            "VALUE": f"{value:.{decimals}f}", "UNITS": unit, "TYPE": "numeric"})

    def medication(self, enc: dict, code: str, reason: str | None,
                   stop: dt.datetime | None = None) -> None:
        cost = round(float(self.rng.uniform(2, 400)), 2)
        dispenses = int(self.rng.integers(1, 13))
        self.rows.tables["medications"].append({
            "START": enc["START"], "STOP": stop, "PATIENT": enc["PATIENT"], "PAYER": enc["PAYER"],
            "ENCOUNTER": enc["Id"], "CODE": code, "DESCRIPTION": self.drugs[code],
            "BASE_COST": f"{cost:.2f}", "PAYER_COVERAGE": f"{cost * 0.8 * dispenses:.2f}",
            "DISPENSES": str(dispenses), "TOTALCOST": f"{cost * dispenses:.2f}",
            "REASONCODE": reason or "", "REASONDESCRIPTION": self.conditions[reason] if reason else ""})

    def procedure(self, enc: dict, code: str, reason: str | None = None) -> None:
        self.rows.tables["procedures"].append({
            "START": enc["START"], "STOP": enc["START"] + dt.timedelta(minutes=30),
            "PATIENT": enc["PATIENT"], "ENCOUNTER": enc["Id"], "CODE": code,
            "DESCRIPTION": self.procedures[code],
            "BASE_COST": f"{float(self.rng.uniform(50, 1200)):.2f}",
            "REASONCODE": reason or "", "REASONDESCRIPTION": self.conditions[reason] if reason else ""})


def _at(day: dt.date, rng: np.random.Generator) -> dt.datetime:
    """A clinic time on ``day`` (08:00–16:59, whole minutes)."""
    return dt.datetime.combine(day, dt.time(int(rng.integers(8, 17)), int(rng.integers(0, 60))))


_OA_CODES = ("396275006", "239873007", "239872002")


def landing_rows_build(cohort: pd.DataFrame, idents: pd.DataFrame, profile: SiteProfile,
                       vocab: dict[str, pd.DataFrame], rng: np.random.Generator,
                       last_cutoff: dt.date, waveform_seconds: dict[str, float]) -> LandingRows:
    """Build every landing row of one site (unformatted) plus the waveform record plans.

    Rows dated on/after ``last_cutoff`` are still produced here; the writer drops them.
    ``waveform_seconds`` gives record durations (s) per device kind.
    """
    ehr = _SiteEHR(profile, vocab, rng)
    devices = set(profile.devices)
    for ordinal, (p, ident) in enumerate(zip(cohort.itertuples(index=False),
                                             idents.to_dict("records")), start=1):
        pid = ident["Id"]
        payer = ehr.payers[int(rng.integers(0, len(ehr.payers)))]
        ra_code = "69896004"
        oa_code = _OA_CODES[int(rng.integers(0, 3))]
        coded = []  # chronic coded conditions
        if p.coded_ra:
            coded.append(ra_code)
        if p.coded_oa:
            coded.append(oa_code)
        if p.coded_t1d:
            coded.append("46635009")
        if p.coded_t2d:
            coded.append("44054006")
        if p.coded_asthma:
            coded.append("195967001")
        if p.coded_copd:
            coded.append("13645005")
        if p.hypertension and rng.random() < 0.9:
            coded.append("59621000" if rng.random() < 0.5 else "38341003")
        if p.atrial_fibrillation:
            coded.append("49436004")
        if p.heart_failure:
            coded.append("84114007")
        if p.prediabetes:
            coded.append("15777000")
        if p.obese and rng.random() < 0.6:
            coded.append("162864005")

        def reason_for(groups: tuple[str, ...]) -> str | None:
            for c in coded:
                if c in groups:
                    return c
            return None

        # ---- intake: history, chronic coded diagnoses, chronic medication --------------------
        referral = p.entry_delivery > 0
        first_day = p.intake_date if p.intake_date is not None else p.covid_date
        weight_kg = p.bmi * (p.height_cm / 100) ** 2

        def vitals(enc: dict, *, acute: bool = False, height: bool = False) -> None:
            ehr.observation(enc, "8867-4", p.resting_hr_bpm + rng.normal(0, 5) + (15 if acute else 0))
            sbp = 118 + 0.45 * (p.age_at_index - 50) + 12 * p.hypertension + rng.normal(0, 10)
            ehr.observation(enc, "8480-6", sbp)
            ehr.observation(enc, "8462-4", 0.6 * sbp + rng.normal(5, 6))
            ehr.observation(enc, "29463-7", weight_kg + rng.normal(0, 1.0))
            if height:
                ehr.observation(enc, "8302-2", p.height_cm + rng.normal(0, 0.5))
            ehr.observation(enc, "8310-5", (38.3 if acute else 36.8) + rng.normal(0, 0.3))
            spo2 = 97.0 - 3.0 * p.true_copd - (6.0 if acute else 0.0) + rng.normal(0, 1.2)
            ehr.observation(enc, "59408-5", min(spo2, 100.0))

        def basic_labs(enc: dict) -> None:
            diabetic = p.true_t1d or p.true_t2d
            glucose = rng.normal(165, 40) if diabetic else rng.normal(96, 11)
            ehr.observation(enc, "2345-7", max(glucose, 55))
            creat = 0.85 + 0.15 * (not p.female) + 0.004 * (p.age_at_index - 50) + rng.normal(0, 0.12)
            ehr.observation(enc, "2160-0", max(creat, 0.4))
            if diabetic or p.coded_t1d or p.coded_t2d or p.prediabetes or rng.random() < 0.25:
                a1c = rng.normal(7.9, 0.9) if diabetic else rng.normal(6.0 if p.prediabetes else 5.4, 0.25)
                ehr.observation(enc, "4548-4", a1c)

        intake_kind = ENC_PROBLEM if referral else ENC_CHECKUP
        if p.intake_date is not None:
            intake = ehr.encounter(pid, payer, _at(first_day, rng), intake_kind)
            vitals(intake, height=True)
            basic_labs(intake)
        else:
            intake = None

        # ---- acute COVID ------------------------------------------------------------------
        if referral:
            covid_enc = intake
            # infection treated elsewhere: recorded (and resolved) at the referral intake
            ehr.condition(intake, "840539006", stop=intake["START"].date())
        else:
            kind = ENC_INPATIENT if p.hospitalized else (ENC_EMERGENCY if rng.random() < 0.3 else ENC_SYMPTOM)
            start = _at(p.covid_date, rng)
            stop = start + (dt.timedelta(days=int(rng.integers(4, 15))) if p.hospitalized
                            else dt.timedelta(minutes=int(rng.integers(30, 240))))
            covid_enc = ehr.encounter(pid, payer, start, kind, reason="840539006", stop=stop)
            resolved = p.covid_date + dt.timedelta(days=int(rng.integers(10, 29)))
            ehr.condition(covid_enc, "840539006", stop=resolved)
            vitals(covid_enc, acute=True, height=intake is None)
            if p.ventilated:
                ehr.procedure(covid_enc, "40617009", reason="840539006")
        history_enc = intake if intake is not None else covid_enc
        for c in coded:
            ehr.condition(history_enc, c)

        # chronic medication follows the TRUE phenotype; the reason code is the coded diagnosis
        joint_reason = reason_for((ra_code, oa_code))
        if p.true_ra:
            if rng.random() < 0.88:
                ehr.medication(history_enc, "105585", joint_reason)
            if rng.random() < 0.35:
                ehr.medication(history_enc, "310965", joint_reason)
        if p.true_oa:
            took = False
            if rng.random() < 0.6:
                ehr.medication(history_enc, "310965" if rng.random() < 0.7 else "198405", joint_reason)
                took = True
            if rng.random() < 0.5 or not took:
                ehr.medication(history_enc, "313782", joint_reason)
        dm_reason = reason_for(("46635009", "44054006"))
        if p.true_t1d:
            ehr.medication(history_enc, "106892", dm_reason)
        if p.true_t2d:
            if rng.random() < 0.85:
                ehr.medication(history_enc, "860975", dm_reason)
            if rng.random() < 0.2:
                ehr.medication(history_enc, "106892", dm_reason)
        resp_reason = reason_for(("195967001", "13645005"))
        if p.true_copd:
            if rng.random() < 0.85:
                ehr.medication(history_enc, "1552003", resp_reason)
            if rng.random() < 0.2:
                ehr.medication(history_enc, "895994", resp_reason)
        if p.true_asthma:
            if rng.random() < 0.85:
                ehr.medication(history_enc, "895994", resp_reason)
            if rng.random() < 0.05:
                ehr.medication(history_enc, "1552003", resp_reason)
        if p.hypertension and rng.random() < 0.7:
            ehr.medication(history_enc, "314076", reason_for(("59621000", "38341003")))

        # ---- long-COVID diagnosis and interim visits -------------------------------------------
        if referral:
            lc_enc = intake
        else:
            lc_enc = ehr.encounter(pid, payer, _at(p.long_covid_date, rng), ENC_PROBLEM)
            vitals(lc_enc)
        ehr.condition(lc_enc, "1119303003")
        span = (p.index_date - p.long_covid_date).days
        for _ in range(int(rng.poisson(1.2)) if span > 20 else 0):
            day = p.long_covid_date + dt.timedelta(days=int(rng.integers(7, span - 6)))
            vitals(ehr.encounter(pid, payer, _at(day, rng), ENC_FOLLOWUP, reason="1119303003"))

        # ---- index (baseline) visit: labs, 6MWD, therapy -------------------------------------
        idx = ehr.encounter(pid, payer, _at(p.index_date, rng), ENC_PROBLEM, reason="1119303003")
        vitals(idx, height=referral and intake is None)
        basic_labs(idx)
        ehr.observation(idx, "1988-5", p.crp_baseline_mg_l)
        joint_context = p.true_ra or p.true_oa or p.coded_ra or p.coded_oa
        if joint_context or rng.random() < 0.08:
            if p.true_ra:
                rf = rng.uniform(3, 13) if rng.random() < 0.2 else np.exp(rng.normal(np.log(90), 0.7))
                ccp = rng.uniform(0.5, 15) if rng.random() < 0.25 else np.exp(rng.normal(np.log(130), 0.8))
            else:
                rf = rng.uniform(15, 45) if rng.random() < 0.06 else rng.uniform(2, 13)
                ccp = rng.uniform(18, 35) if rng.random() < 0.03 else rng.uniform(0.5, 6)
            ehr.observation(idx, "11572-5", rf)
            ehr.observation(idx, "32218-0", ccp)
        if p.true_t1d or p.true_t2d or p.coded_t1d or p.coded_t2d:
            if p.true_t1d:
                cpep = rng.uniform(0.4, 0.9) if rng.random() < 0.1 else np.exp(rng.normal(np.log(0.15), 0.5))
            elif p.true_t2d:
                cpep = rng.uniform(0.8, 1.2) if rng.random() < 0.1 else np.exp(rng.normal(np.log(2.5), 0.35))
            else:
                cpep = np.exp(rng.normal(np.log(2.0), 0.35))
            ehr.observation(idx, "1986-9", cpep)
        resp_context = p.true_asthma or p.true_copd or p.coded_asthma or p.coded_copd
        if resp_context or (p.mmrc_baseline >= 2 and rng.random() < 0.5) or rng.random() < 0.12:
            if p.true_copd:
                ratio = rng.normal(58, 7)
            elif p.true_asthma:
                ratio = rng.normal(76, 6)
            else:
                ratio = rng.normal(79, 5)
            ehr.observation(idx, "19926-5", float(np.clip(ratio, 25, 95)))
            ehr.procedure(idx, "127783003", reason=resp_reason)
        ehr.observation(idx, "64098-7", p.baseline_6mwd_m)
        if rng.random() < 0.5:
            ehr.procedure(idx, "430193006")
        if p.therapy_arm == "colchicine":
            ehr.medication(idx, "197541", "1119303003", stop=idx["START"] + dt.timedelta(days=90))
        elif p.therapy_arm == "antiviral":
            ehr.medication(idx, "2587898", "1119303003", stop=idx["START"] + dt.timedelta(days=5))
        elif p.therapy_arm == "pulmonary_rehab":
            ehr.procedure(idx, "229072007", reason="1119303003")
            for week in (2, 4, 6):
                day = p.index_date + dt.timedelta(days=7 * week + int(rng.integers(-2, 3)))
                sess = ehr.encounter(pid, payer, _at(day, rng), ENC_OUTPATIENT_PROC, reason="1119303003")
                ehr.procedure(sess, "229072007", reason="1119303003")

        # ---- follow-up (day 90) -----------------------------------------------------------
        if rng.random() < 0.4:
            mid = p.index_date + dt.timedelta(days=int(rng.integers(35, 55)))
            vitals(ehr.encounter(pid, payer, _at(mid, rng), ENC_FOLLOWUP, reason="1119303003"))
        fu = ehr.encounter(pid, payer, _at(p.followup_date, rng), ENC_FOLLOWUP, reason="1119303003")
        vitals(fu)
        crp_fu = (p.crp_baseline_mg_l * np.exp(rng.normal(-0.1, 0.3))
                  * (0.6 if p.therapy_arm == "colchicine" else 1.0))
        ehr.observation(fu, "1988-5", max(crp_fu, 0.2))
        y_obs = getattr(p, f"y_{p.therapy_arm}")
        ehr.observation(fu, "64098-7", y_obs)
        for _ in range(int(rng.integers(0, 3))):
            day = p.followup_date + dt.timedelta(days=int(rng.integers(10, 200)))
            if day < last_cutoff:
                vitals(ehr.encounter(pid, payer, _at(day, rng), ENC_FOLLOWUP))

        # ---- interviews ---------------------------------------------------------------------
        pain, stiff, pattern = joint_findings(p.true_ra, p.true_oa, rng)
        full_name = f"{ident['FIRST']} {ident['LAST']}"
        visits = []
        if rng.random() < 0.96:
            visits.append(("baseline", 1, p.index_date, int(p.fatigue_baseline), int(p.mmrc_baseline), None))
        if rng.random() < 0.92:
            change = (y_obs - p.baseline_6mwd_m) / 40.0
            f90 = int(np.clip(round(p.fatigue_baseline - change + rng.normal(0, 1.0)), 0, 10))
            m90 = int(np.clip(round(p.mmrc_baseline - change / 3 + rng.normal(0, 0.5)), 0, 4))
            visits.append(("day90", 2, p.followup_date, f90, m90, y_obs))
        for kind, code, day, fat, mm, walk in visits:
            sev = (fat - 5) / 2.0
            st = int(np.clip(stiff + rng.normal(0, 5), 0, 600)) if pain else 0
            ehr.rows.interviews.append({
                "record_id": f"{ordinal:05d}-{code}",
                "patient_id": pid, "full_name": full_name if rng.random() > 0.1 else full_name.upper(),
                "phone": ident["PHONE"], "interview_date": day, "interview_type": code,
                "fatigue_score": fat, "dyspnea_mmrc": mm,
                "cognitive_complaints": int(rng.random() < 1 / (1 + np.exp(-(sev + 0.2)))),
                "post_exertional_malaise": int(rng.random() < 1 / (1 + np.exp(-(sev + 0.4)))),
                "joint_pain": pain, "morning_stiffness_min": st, "joint_pattern": pattern,
                "notes": interview_note(kind, ident, fatigue=fat, mmrc=mm, walk_m=walk,
                                        covid_date=p.covid_date, visit_date=day,
                                        date_format=profile.date_format,
                                        smoker=bool(p.ever_smoker), rng=rng),
            })

        # ---- waveform plans -----------------------------------------------------------------
        mrn = ident["MRN"]
        dob = ident["BIRTHDATE"].isoformat()
        comment = f"patient: {full_name} mrn: {mrn} dob: {dob}"
        if "ecg_monitor" in devices and rng.random() < 0.6:
            start = idx["START"] + dt.timedelta(minutes=10, seconds=int(rng.integers(0, 60)))
            ehr.procedure(idx, "29303009")
            ehr.rows.waveforms.append({
                "record": f"ecg_{mrn}_{start:%Y%m%d}", "patient_id": pid,
                "device_kind": "ecg_monitor", "start": start,
                "duration_s": waveform_seconds["ecg_monitor"],
                "sampling_rate_hz": profile.ecg_sampling_rate_hz,
                "device_serial": f"ECG-{profile.site_id[-1].upper()}{int(rng.integers(1, 4)):02d}",
                "comments": [comment],
                "true_hr_bpm": round(float(p.resting_hr_bpm + rng.normal(4, 3)), 1)})
        if "ventilator" in devices and p.ventilated:
            mode = "volume" if rng.random() < 0.5 else "pressure"
            start = (dt.datetime.combine(p.covid_date, dt.time(0)) + dt.timedelta(
                days=1, hours=int(rng.integers(0, 24)), minutes=int(rng.integers(0, 60))))
            ehr.rows.waveforms.append({
                "record": f"vent_{mrn}_{start:%Y%m%d}", "patient_id": pid,
                "device_kind": "ventilator", "start": start,
                "duration_s": waveform_seconds["ventilator"], "sampling_rate_hz": 50,
                "device_serial": f"PB840-{int(rng.integers(1000, 9999))}",
                "comments": [comment, "mode: " + ("VC" if mode == "volume" else "PC")],
                "ventilation_mode": mode,
                "true_rr_bpm": round(float(rng.uniform(12, 28)), 1),
                "true_tidal_volume_ml": round(float(rng.uniform(5.5, 8.0) * (p.height_cm - 100)), 0),
                "true_peep_cmh2o": float(rng.choice([5.0, 6.0, 8.0, 10.0, 12.0])),
                "true_compliance_ml_cmh2o": round(float(rng.uniform(20, 60)), 1),
                "true_resistance_cmh2o_l_s": round(float(rng.uniform(6, 15)), 1)})
        if "wearable" in devices and rng.random() < 0.3:
            day = p.index_date + dt.timedelta(days=int(rng.integers(7, 60)))
            start = dt.datetime.combine(day, dt.time(int(rng.integers(7, 21)), int(rng.integers(0, 60))))
            ehr.rows.waveforms.append({
                "record": f"wear_{mrn}_{start:%Y%m%d}", "patient_id": pid,
                "device_kind": "wearable", "start": start,
                "duration_s": waveform_seconds["wearable"], "sampling_rate_hz": 50,
                "device_serial": f"WR-{int(rng.integers(100000, 999999))}",
                "comments": [comment],
                "true_resting_hr_bpm": float(p.resting_hr_bpm)})
    return ehr.rows
