"""Interview instruments: which REDCap answers are coded observations and how they score.

The long-COVID follow-up form (docs/landing_contract.md) holds a fatigue slider (0–10), the mMRC
dyspnea grade (0–4), yes/no items for cognitive complaints, post-exertional malaise and joint pain,
minutes of morning stiffness and the joint pattern.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ANSWER_FIELDS = [
    "interview_type",
    "fatigue_score",
    "dyspnea_mmrc",
    "cognitive_complaints",
    "post_exertional_malaise",
    "joint_pain",
    "morning_stiffness_min",
    "joint_pattern",
]
# item -> maximum, for a 0–100 symptom burden score (equal weight per item)
BURDEN_ITEMS = {
    "fatigue_score": 10.0,
    "dyspnea_mmrc": 4.0,
    "cognitive_complaints": 1.0,
    "post_exertional_malaise": 1.0,
    "joint_pain": 1.0,
}


def interview_scores(interviews: pd.DataFrame) -> pd.DataFrame:
    """One row per interview: the answers plus `symptom_burden` (0–100, mean of items scaled to their
    maximum, over the items answered) and `items_answered`. NaN when no burden item was answered."""
    keys = ["site_id", "delivery_id", "interview_id", "person_id", "interview_date"]
    out = interviews[[c for c in keys + ANSWER_FIELDS if c in interviews.columns]].copy()
    scaled = []
    for item, mx in BURDEN_ITEMS.items():
        col = out[item] if item in out else pd.Series(np.nan, index=out.index)
        scaled.append((col.astype("float64") / mx).clip(0, 1))
    mat = pd.concat(scaled, axis=1)
    out["items_answered"] = mat.notna().sum(axis=1).astype("int64")
    out["symptom_burden"] = (mat.mean(axis=1, skipna=True) * 100.0).astype("float64")
    for c in ANSWER_FIELDS:
        if c not in out:
            out[c] = np.nan
    return out.reset_index(drop=True)
