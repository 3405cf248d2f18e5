"""REDCap long-COVID interview: data dictionary, per-visit scores and clinician notes with PHI.

Scores follow the patient's latent state (fatigue 0–10, mMRC 0–4, joint findings of the TRUE
joint phenotype); notes are free text that mention the patient's name and sometimes phone, MRN,
dates and a relative's name, so de-identification has something real to scrub.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

REDCAP_DICTIONARY_COLUMNS = (
    "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
    "Choices, Calculations, OR Slider Labels", "Field Note",
    "Text Validation Type OR Show Slider Number", "Text Validation Min", "Text Validation Max",
    "Identifier?", "Branching Logic (Show field only if...)", "Required Field?", "Custom Alignment",
    "Question Number (surveys only)", "Matrix Group Name", "Matrix Ranking?", "Field Annotation",
)
RECORD_COLUMNS = (
    "record_id", "patient_id", "full_name", "phone", "interview_date", "interview_type",
    "fatigue_score", "dyspnea_mmrc", "cognitive_complaints", "post_exertional_malaise", "joint_pain",
    "morning_stiffness_min", "joint_pattern", "notes",
)
FORM = "long_covid_interview"

_REDCAP_DATE_VALIDATION = {"%Y-%m-%d": "date_ymd", "%d/%m/%Y": "date_dmy", "%m/%d/%Y": "date_mdy"}


def interview_dictionary(date_format: str) -> list[dict[str, str]]:
    """REDCap data dictionary rows (18 standard columns) for the interview form.

    The date validation follows the site's ``date_format`` (``date_ymd``/``date_dmy``/``date_mdy``).
    """
    date_val = _REDCAP_DATE_VALIDATION.get(date_format, "date_ymd")
    fields = [
        ("record_id", "text", "Record ID", "", "", "", "", "", ""),
        ("patient_id", "text", "EHR patient id", "", "", "", "", "y", ""),
        ("full_name", "text", "Patient full name", "", "", "", "", "y", ""),
        ("phone", "text", "Contact phone", "", "phone", "", "", "y", ""),
        ("interview_date", "text", "Date of interview", "", date_val, "", "", "", "y"),
        ("interview_type", "radio", "Interview", "1, baseline | 2, day-90 follow-up", "", "", "",
         "", "y"),
        ("fatigue_score", "slider", "Fatigue severity (0 none, 10 worst)", "None | | Worst",
         "number", "0", "10", "", "y"),
        ("dyspnea_mmrc", "radio", "mMRC dyspnea grade",
         "0, 0 | 1, 1 | 2, 2 | 3, 3 | 4, 4", "", "", "", "", "y"),
        ("cognitive_complaints", "yesno", "Cognitive complaints (brain fog)", "", "", "", "", "", ""),
        ("post_exertional_malaise", "yesno", "Post-exertional malaise", "", "", "", "", "", ""),
        ("joint_pain", "yesno", "Joint pain", "", "", "", "", "", ""),
        ("morning_stiffness_min", "text", "Morning joint stiffness (minutes)", "", "integer", "0",
         "600", "", ""),
        ("joint_pattern", "radio", "Joint involvement pattern",
         "0, none | 1, symmetric small joints | 2, asymmetric large weight-bearing joints", "", "",
         "", "", ""),
        ("notes", "notes", "Clinician notes", "", "", "", "", "", ""),
    ]
    rows = []
    for name, ftype, label, choices, val, vmin, vmax, ident, req in fields:
        row = dict.fromkeys(REDCAP_DICTIONARY_COLUMNS, "")
        row.update({
            "Variable / Field Name": name, "Form Name": FORM, "Field Type": ftype,
            "Field Label": label, "Choices, Calculations, OR Slider Labels": choices,
            "Text Validation Type OR Show Slider Number": val, "Text Validation Min": vmin,
            "Text Validation Max": vmax, "Identifier?": ident, "Required Field?": req,
        })
        if name == "morning_stiffness_min":
            row["Branching Logic (Show field only if...)"] = "[joint_pain] = '1'"
        rows.append(row)
    return rows


def joint_findings(true_ra: bool, true_oa: bool, rng: np.random.Generator) -> tuple[int, int, int]:
    """(joint_pain 0/1, morning stiffness minutes, joint_pattern 0/1/2) for the TRUE phenotype.

    RA: long stiffness (mostly > 30 min), symmetric small joints; OA: short stiffness, asymmetric
    weight-bearing joints; ~10 % of each look atypical so the groups overlap.
    """
    if true_ra:
        stiff = int(np.clip(rng.gamma(4.0, 25.0), 10, 400)) if rng.random() > 0.1 \
            else int(rng.integers(10, 31))
        pattern = int(rng.choice([1, 2, 0], p=[0.85, 0.09, 0.06]))
        return 1, stiff, pattern
    if true_oa:
        stiff = int(rng.integers(0, 31)) if rng.random() > 0.1 else int(rng.integers(31, 50))
        pattern = int(rng.choice([2, 1, 0], p=[0.85, 0.10, 0.05]))
        return int(rng.random() < 0.95), stiff, pattern
    if rng.random() < 0.15:
        return 1, int(rng.integers(0, 16)), int(rng.choice([0, 1, 2], p=[0.6, 0.2, 0.2]))
    return 0, 0, 0


_COVID_MONTH_FMT = "%B %Y"


def interview_note(kind: str, ident: dict, *, fatigue: int, mmrc: int, walk_m: float | None,
                   covid_date: dt.date, visit_date: dt.date, date_format: str, smoker: bool,
                   rng: np.random.Generator) -> str:
    """Free-text clinician note (PHI-bearing): name always; relative, phone, MRN, dates sometimes."""
    full = f"{ident['FIRST']} {ident['LAST']}"
    parts: list[str] = []
    if kind == "baseline":
        parts.append(f"{full} seen in long-COVID clinic on {visit_date.strftime(date_format)}.")
        parts.append(f"COVID-19 in {covid_date.strftime(_COVID_MONTH_FMT)}; "
                     f"fatigue {fatigue}/10, mMRC {mmrc}.")
        parts.append("Former or current smoker." if smoker else "Never smoker.")
    else:
        parts.append(f"Day-90 review for {ident['PREFIX']} {ident['LAST']} "
                     f"({visit_date.strftime(date_format)}).")
        if walk_m is not None:
            parts.append(f"Walked {int(walk_m)} m in 6 minutes today; fatigue {fatigue}/10.")
    if rng.random() < 0.5:
        parts.append(f"Seen with {ident['relative_relation']} {ident['relative_name']}.")
    if rng.random() < 0.45:
        parts.append(f"MRN {ident['MRN']}.")
    if rng.random() < 0.35:
        parts.append(f"Call back on {ident['PHONE']}.")
    if rng.random() < 0.25:
        nxt = visit_date + dt.timedelta(days=int(rng.integers(14, 60)))
        parts.append(f"Next appointment {nxt.strftime('%d %b %Y')}.")
    if rng.random() < 0.15:
        parts.append(f"DOB {ident['BIRTHDATE'].strftime(date_format)} confirmed with {ident['FIRST']}.")
    return " ".join(parts)
