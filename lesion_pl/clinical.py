"""Clinical metadata beside the image: age, sex and body site, where the data has them.

A multinomial logistic regression fitted on the training split predicts the class from these
alone. Its log-likelihood ratio, log p(class | metadata) - log p(class), is added to the image
model's calibrated log-probabilities with a weight fitted on validation for the lowest NLL
(`calibration.fit_fusion_weight`): late
fusion that treats image and metadata as independent given the class, the weight shrinking the
ratio where they are not. An image without any usable metadata keeps its image-only probabilities.

Encoding: age in decades (90+ together), sex and site one-hot over the values seen in training;
a missing, "unknown" or unseen value is all zeros in its group, as training's unknowns were.

Numpy only at prediction time (the ONNX runtime imports it); scikit-learn only to fit.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FIELDS = ("age", "sex", "site")
AGE_DECADES = 10  # 0-9, 10-19, ..., 90+


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    return None if text in ("", "unknown", "nan", "none", "n/a", "na", "?") else text


MAX_AGE = 120  # years: an age above it (or not finite) is a typo or a hostile value, read as unknown


def age_years(value) -> float | None:
    """An age in years from 0 to MAX_AGE, or None (unknown): blanks, text, NaN, infinities and absurd numbers
    (1e308 would otherwise be fused as 90+) alike. Every reader of an age goes through here."""
    if isinstance(value, str) and len(value) > 32:  # no 900 KB digit strings through float()
        return None
    try:
        age = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return age if math.isfinite(age) and 0 <= age <= MAX_AGE else None




def _column(records: Mapping[str, Sequence], name: str | None, n: int) -> list:
    if name is None or name not in records:
        return [None] * n
    return list(records[name])


def _rows(records: Mapping[str, Sequence]) -> int:
    if hasattr(records, "columns"):  # a DataFrame
        return len(records)
    return max((len(v) for v in records.values()), default=0)


def encode(records: Mapping[str, Sequence], model: dict) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, F] and whether each row has any usable metadata [N]. `records`: column -> values
    (a DataFrame works), with the column names in `model["columns"]`."""
    cols = model["columns"]
    n = _rows(records)
    ages = [age_years(v) for v in _column(records, cols.get("age"), n)]
    sexes = [_text(v) for v in _column(records, cols.get("sex"), n)]
    sites = [_text(v) for v in _column(records, cols.get("site"), n)]
    sex_index = {v: i for i, v in enumerate(model["sexes"])}
    site_index = {v: i for i, v in enumerate(model["sites"])}
    x = np.zeros((n, AGE_DECADES + len(sex_index) + len(site_index)))
    has_any = np.zeros(n, dtype=bool)
    for r, (age, sex, site) in enumerate(zip(ages, sexes, sites, strict=True)):
        has_any[r] = age is not None or sex in sex_index or site in site_index
        if age is not None:
            x[r, min(int(age // 10), AGE_DECADES - 1)] = 1.0
        if sex in sex_index:
            x[r, AGE_DECADES + sex_index[sex]] = 1.0
        if site in site_index:
            x[r, AGE_DECADES + len(sex_index) + site_index[site]] = 1.0
    return x, has_any


def unrecognised(records: Mapping[str, Sequence], model: dict) -> dict[str, list[str]]:
    """Values read as unknown though given, per field: an age that is not a number of years (`age_years`), a sex
    or site that training never saw."""
    out = {}
    name = model["columns"].get("age")
    if name in records:
        bad = {str(v).strip() for v in records[name] if _text(v) is not None and age_years(v) is None}
        if bad:
            out["age"] = sorted(bad)
    for field, known in (("sex", model["sexes"]), ("site", model["sites"])):
        name = model["columns"].get(field)
        if name in records:
            seen = {t for t in map(_text, records[name]) if t is not None}
            if seen - set(known):
                out[field] = sorted(seen - set(known))
    return out


def unrecognised_notes(records: Mapping[str, Sequence], model: dict) -> list[str]:
    """`unrecognised` in words, one line per field: what predict prints, the service returns and calibrate says."""
    notes = []
    for field, values in unrecognised(records, model).items():
        shown = ", ".join(repr(v[:40]) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        if field == "age":
            notes.append(f"age value(s) {shown} are not a number of years from 0 to {MAX_AGE}, read as unknown")
        else:
            known = model["sexes" if field == "sex" else "sites"]
            notes.append(f"{field} value(s) {shown} not seen in training, read as unknown (known: {', '.join(known)})")
    return notes


def present(records: Mapping[str, Sequence], columns: Mapping[str, str]) -> list[str]:
    """The metadata fields whose columns `records` has."""
    return [f for f in FIELDS if columns.get(f) in records]


def fit(records: Mapping[str, Sequence], labels: np.ndarray, columns: Mapping[str, str], num_classes: int,
        c: float = 1.0) -> dict | None:
    """The metadata model fitted on training rows (L2-regularised multinomial logistic regression);
    None where the rows have no metadata column or fewer than two classes."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    if not present(records, columns) or len(np.unique(labels)) < 2:
        return None
    fields = {f: columns[f] for f in present(records, columns)}
    model: dict[str, Any] = {"columns": fields}
    for field, key in (("sex", "sexes"), ("site", "sites")):
        name = fields.get(field)
        model[key] = sorted({t for t in map(_text, records[name]) if t is not None}) if name else []
    x, _ = encode(records, model)
    lr = LogisticRegression(C=c, max_iter=5000).fit(x, labels)
    lr_coef, lr_intercept = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:  # sklearn keeps one row for two classes: softmax form is +-half of it
        lr_coef, lr_intercept = np.vstack([-lr_coef, lr_coef]) / 2, np.array([-1.0, 1.0]) * lr_intercept / 2
    coef = np.zeros((num_classes, x.shape[1]))
    intercept = np.full(num_classes, -30.0)  # a class absent from training: never predicted from metadata
    coef[lr.classes_], intercept[lr.classes_] = lr_coef, lr_intercept
    counts = np.maximum(np.bincount(labels, minlength=num_classes), 1).astype(float)
    model.update(coef=coef.tolist(), intercept=intercept.tolist(), log_prior=np.log(counts / counts.sum()).tolist(),
                 weight=1.0)
    return model


def log_ratio(records: Mapping[str, Sequence], model: dict) -> np.ndarray:
    """log p(class | metadata) - log p(class) per row [N, C]; zero rows where a row has no metadata."""
    return _log_ratio(*encode(records, model), model)


def _log_ratio(x: np.ndarray, has_any: np.ndarray, model: dict) -> np.ndarray:
    z = x @ np.asarray(model["coef"]).T + np.asarray(model["intercept"])
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return np.where(has_any[:, None], log_p - np.asarray(model["log_prior"]), 0.0)


def fuse(probs: np.ndarray, ratio: np.ndarray, weight: float) -> np.ndarray:
    """Probabilities times exp(weight * ratio), renormalised."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)) + weight * np.asarray(ratio)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def fused(probs: np.ndarray, records: Mapping[str, Sequence], model: dict) -> tuple[np.ndarray, np.ndarray]:
    """A run's fused probabilities and which rows had usable metadata (the records encoded once)."""
    if _rows(records) != len(probs):
        raise ValueError(f"{_rows(records)} metadata rows for {len(probs)} images")
    x, has_any = encode(records, model)
    return fuse(probs, _log_ratio(x, has_any, model), model["weight"]), has_any
