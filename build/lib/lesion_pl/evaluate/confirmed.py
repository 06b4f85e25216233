"""Figures where HAM10000's shortcut is gone: on the histopathology-confirmed lesions, and by how each diagnosis
was made (the source's `dx_type` column).

3,704 of HAM10000's 6,705 nevi are follow-up images from one serial-imaging practice, which a model tells from
melanoma almost perfectly; the all-lesion AUROC leans on them. The excised (histopathology-confirmed) lesions are
the ones a clinician found suspicious enough to cut out: the decision the tool exists to support. So wherever a
source records how each diagnosis was made, `test` reports these figures beside the all-lesion ones, and a
source without such a column says that it has none.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..calibration import lesion_bootstrap
from ..classes import LabelSpace
from ..scoring import Scored, ScoringPolicy, is_positive
from .metrics import binary_auroc, operating_points

METHOD_COLUMN = "dx_type"  # how each diagnosis was made (HAM10000: histo, follow_up, consensus, confocal)
CONFIRMED = "histo"  # histopathology: the lesion was excised
NEVUS = "nv"  # the class the shortcut lives in (HAM10000's code)
NO_METHOD = (f"this source records no '{METHOD_COLUMN}' column (how each diagnosis was made), so there are no "
             "figures on histopathology-confirmed lesions")


def diagnosis_method(rows: pd.DataFrame) -> np.ndarray | None:
    """Each row's diagnosis method as text ('unknown' where blank); None where the source has no such column."""
    if METHOD_COLUMN not in rows:
        return None
    return rows[METHOD_COLUMN].fillna("unknown").astype(str).str.strip().str.lower().to_numpy()


def aurocs(scores: dict[str, np.ndarray], target: np.ndarray, space: LabelSpace) -> dict[str, float]:
    """Malignant AUROC (malignant vs the rest), melanoma AUROC (melanoma vs the rest) and melanoma against nevi
    alone, on these rows (nan where a side is empty); those the space has."""
    out = {"auroc_malignant": binary_auroc(scores["malignant"], is_positive(target, "malignant", space))}
    if "melanoma" in scores:
        mel = is_positive(target, "melanoma", space)
        out["auroc_melanoma"] = binary_auroc(scores["melanoma"], mel)
        if NEVUS in space.index:
            vs = mel | (target == space.index[NEVUS])
            out["auroc_melanoma_vs_nevi"] = binary_auroc(scores["melanoma"][vs], mel[vs])
    return out


def confirmed_figures(policy: ScoringPolicy, scored: Scored, target: np.ndarray, rows: pd.DataFrame,
                      n_boot: int, seed: int) -> dict:
    """On the histopathology-confirmed rows alone: their AUROCs with lesion-bootstrap 95% CIs, and the run's
    referral thresholds applied to them (sensitivity, and specificity on the confirmed benign lesions).
    `{"available": False, "reason": ...}` where the source cannot say which rows those are."""
    method = diagnosis_method(rows)
    if method is None:
        return {"available": False, "reason": NO_METHOD}
    keep = method == CONFIRMED
    space = policy.space
    benign = keep & ~is_positive(target, "malignant", space)
    if not keep.any() or not benign.any() or benign.sum() == keep.sum():
        return {"available": False, "reason": f"these images have {int(keep.sum())} with {METHOD_COLUMN} = "
                f"{CONFIRMED}, {int(benign.sum())} of them benign: no AUROC to compute"}
    sub, t = scored.take(keep), target[keep]
    groups = rows["group"].to_numpy()[keep]
    out = {"available": True, "column": METHOD_COLUMN, "value": CONFIRMED, "images": int(keep.sum()),
           "lesions": int(pd.unique(groups).size), "benign_images": int(benign.sum()),
           "malignant_images": int(keep.sum() - benign.sum()), **aurocs(sub.scores, t, space)}
    if NEVUS in space.index:
        out["nevus_images"] = int((t == space.index[NEVUS]).sum())
    out["ci95"] = lesion_bootstrap(groups, lambda pick: aurocs({k: v[pick] for k, v in sub.scores.items()}, t[pick],
                                                               space), n_boot, seed)
    positives = {n: is_positive(t, n, space) for n in sub.scores}
    out["operating_points"] = operating_points(policy, sub, positives, groups, n_boot, seed)
    return out


def by_method(scored: Scored, target: np.ndarray, rows: pd.DataFrame, space: LabelSpace) -> list[dict] | None:
    """One row per diagnosis method: its images, error rate, and how well every malignant image (melanoma) is told
    from the benign images (nevi) of that method, with the malignant referral's specificity on them. The
    follow-up nevi's row is the shortcut. None without the column."""
    method = diagnosis_method(rows)
    if method is None:
        return None
    malignant = is_positive(target, "malignant", space)
    melanoma = is_positive(target, "melanoma", space) if "melanoma" in scored.scores else None
    nevus = target == space.index[NEVUS] if NEVUS in space.index else None
    refer = scored.refer("malignant")
    out = []
    for value in sorted(set(method)):
        mine = method == value
        row = {METHOD_COLUMN: value, "images": int(mine.sum()), "benign_images": int((mine & ~malignant).sum()),
               "error_rate": float((scored.top_index[mine] != target[mine]).mean())}
        negatives = mine & ~malignant
        both = malignant | negatives
        row["auroc_malignant_vs_these_benign"] = binary_auroc(scored.scores["malignant"][both], malignant[both])
        if melanoma is not None and nevus is not None:
            vs = melanoma | (mine & nevus)
            row["nevus_images"] = int((mine & nevus).sum())
            row["auroc_melanoma_vs_these_nevi"] = binary_auroc(scored.scores["melanoma"][vs], melanoma[vs])
        if refer is not None:
            row["malignant_referral_specificity"] = (float((~refer[negatives]).mean()) if negatives.any()
                                                     else float("nan"))
        out.append(row)
    return out
