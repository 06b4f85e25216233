"""Run a lesion-pl ONNX model with onnxruntime, numpy and Pillow only (no torch).

    from lesion_pl.export.runtime import LesionOnnxClassifier
    clf = LesionOnnxClassifier("runs/NAME/export/model.onnx")
    result = clf.predict(["a.jpg", pil_image, uint8_array])
    result.top_class, result.top_probability, result.malignancy, result.refer, result.probabilities
    clf.predict(["a.jpg"], metadata=[{"age": 65, "sex": "male", "site": "back"}])

Probabilities are calibrated (temperature and class-prior correction inside the graph); the top
class is named by the run's decision rule (metadata `decision_rule`: "balanced" divides each
probability by its class's training frequency first, so it is not always the most probable class);
`refer` compares the malignancy probability with the threshold chosen on validation for the run's
target sensitivity (metadata), for images with and without clinical metadata separately. All of it
is `lesion_pl.scoring.ScoringPolicy`, read from the file's metadata: the scoring `test` reports.

Where the run fused clinical metadata (`clinical.fields`), each image may come with a dict of age,
sex and body site (keys: the field names or the training data's column names, e.g.
"localization"); an image given None, or none of them, keeps the image-only probabilities.

Where the model carries an out-of-distribution rule (metadata `ood`, output `ood_score`: lesion_pl/ood.py),
`result.outside` marks the images it refuses as "outside what this model was trained on": their `top_class`
is "", their rows say so instead of a referral, and their probabilities stay, marked.

Images of any size and mode: EXIF orientation applied, converted to RGB, resized as the model's
metadata says (the same function training used).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lesion_pl.errors import LesionPLError
from lesion_pl.ood import OUTSIDE, OodRule
from lesion_pl.preprocess import ImageReadError, image_warning, load_rgb, numpy_views, resize_center_crop, to_rgb
from lesion_pl.scoring import Scored, ScoringPolicy

from .metadata import PREFIX, REQUIRED

ImageLike = str | os.PathLike | Image.Image | np.ndarray
REFER, NO_REFER = "refer", "no referral at this threshold"
Metadata = Mapping[str, object] | None  # one image's age, sex and site


@dataclass
class Outputs:
    """What the graph gives for a batch, its views averaged: probabilities [N, C] and, where the model carries an
    out-of-distribution score (lesion_pl.ood), that score [N] (else None)."""
    probabilities: np.ndarray
    ood_score: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.probabilities)

    def __getitem__(self, rows) -> Outputs:
        return Outputs(self.probabilities[rows], None if self.ood_score is None else self.ood_score[rows])

    @classmethod
    def concat(cls, parts: Sequence[Outputs], num_classes: int) -> Outputs:
        if not parts:
            return cls(np.zeros((0, num_classes), np.float32))
        ood = None if parts[0].ood_score is None else np.concatenate([p.ood_score for p in parts])
        return cls(np.concatenate([p.probabilities for p in parts]), ood)


@dataclass
class Predictions:
    """Per image: the probabilities and what the run's policy makes of them. Where the model carries an
    out-of-distribution rule, `outside` marks the images it refuses: for those, `top_class` is "" and the
    referral is not to be used (`rows` says OUTSIDE instead); the probabilities stay, marked."""
    classes: tuple[str, ...]
    scored: Scored  # what the run's ScoringPolicy made of the model's probabilities
    ood_score: np.ndarray | None = None  # [N], lesion_pl.ood's score (None: the model has none)
    ood: OodRule | None = None

    @property
    def outside(self) -> np.ndarray:
        """[N] True where the image is outside what the model was trained on (all False without a rule)."""
        if self.ood is None or self.ood_score is None:
            return np.zeros(len(self), bool)
        return self.ood.outside(self.ood_score)

    @property
    def probabilities(self) -> np.ndarray:
        """[N, C], calibrated (and fused with the clinical metadata where given)."""
        return self.scored.probabilities

    @property
    def malignancy(self) -> np.ndarray:
        """[N], the malignancy probability: the sum of the malignant classes' probabilities."""
        return self.scored.scores["malignant"]

    @property
    def referral_threshold(self) -> float | np.ndarray | None:
        """Chosen on validation for a target sensitivity (per image where some images came with metadata and
        some without: each has its own threshold)."""
        return self.scored.thresholds.get("malignant")

    @property
    def refer(self) -> np.ndarray | None:
        """True where the malignancy probability reaches the run's referral threshold."""
        return self.scored.refer("malignant")

    @property
    def with_metadata(self) -> np.ndarray | None:
        """Per image: clinical metadata fused (None: none given)."""
        return self.scored.with_metadata

    @property
    def top_index(self) -> np.ndarray:
        """The class named per image, by the run's decision rule."""
        return self.scored.top_index

    @property
    def top_class(self) -> list[str]:
        """The class named per image ("" where the image is outside what the model was trained on)."""
        return ["" if out else self.classes[i] for i, out in zip(self.top_index, self.outside, strict=True)]

    @property
    def top_probability(self) -> np.ndarray:
        return self.probabilities[np.arange(len(self.probabilities)), self.top_index]

    def __len__(self) -> int:
        return len(self.probabilities)

    def rows(self, names: Sequence[str], warnings: Mapping[str, str] | None = None) -> list[dict]:
        """One plain dict per image (as `predict --out x.json` writes them): its name, top class and probability,
        malignancy, referral, whether metadata was fused, every class's probability, and any warning; where the
        model carries an out-of-distribution rule, the score and `outside` too (an image outside gets no class
        and the referral OUTSIDE; its probabilities stay)."""
        refer = self.refer if self.refer is not None else [None] * len(self)
        used = self.with_metadata if self.with_metadata is not None else [None] * len(self)
        scores = self.ood_score if self.ood is not None and self.ood_score is not None else [None] * len(self)
        out = []
        for name, top, p, mal, r, u, probs, s, outside in zip(
                names, self.top_class, self.top_probability, self.malignancy, refer, used, self.probabilities,
                scores, self.outside, strict=True):
            referral = OUTSIDE if outside else "" if r is None else (REFER if r else NO_REFER)
            out.append({"file": str(name), "top_class": top, "probability": None if outside else round(float(p), 6),
                        "malignancy": round(float(mal), 6), "referral": referral,
                        **({} if u is None else {"metadata": "yes" if u else "no"}),
                        **({} if s is None else {"ood_score": float(s), "outside": bool(outside)}),
                        **{f"p_{c}": round(float(v), 6) for c, v in zip(self.classes, probs, strict=True)},
                        "warning": (warnings or {}).get(name, "")})
        return out


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:  # by the bit depth, not the image's own maximum: a dark image stays dark
        if np.issubdtype(arr.dtype, np.integer):
            scale = 255.0 / np.iinfo(arr.dtype).max
        elif np.issubdtype(arr.dtype, np.floating):
            scale = 255.0  # float images in 0..1
        else:
            raise LesionPLError(f"an image array must be integers or floats in 0..1, got {arr.dtype}")
        arr = (arr.astype(np.float64) * scale).round().clip(0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise LesionPLError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    return Image.fromarray(arr)


class LesionOnnxClassifier:
    def __init__(self, model_path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(model_path)
        self.warnings: dict = {}  # {path: why} of the last predict_files call: images not to trust
        if not self.path.is_file():
            raise LesionPLError(f"model file {self.path} does not exist; `python cli.py export --run RUN` makes one")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise LesionPLError(f"{self.path} is not an ONNX model onnxruntime can load: "
                                f"{str(e).splitlines()[0][:200]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in REQUIRED if PREFIX + k not in meta]
        if missing:
            raise LesionPLError(f"{self.path} has no lesion-pl metadata ({', '.join(PREFIX + k for k in missing)}); "
                                "export it with `python cli.py export`")
        self.metadata = {k[len(PREFIX):]: v for k, v in meta.items() if k.startswith(PREFIX)}
        try:
            self._read_metadata()
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # json's errors are ValueErrors
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            raise LesionPLError(f"{self.path} has malformed lesion-pl metadata ({reason}); export it again with "
                                "`python cli.py export`") from None
        height = self.session.get_inputs()[0].shape[1]
        if isinstance(height, int) and height != self.size:
            raise LesionPLError(f"{self.path}: its metadata says input size {self.size} px but the graph takes "
                                f"{height} px; export it again with `python cli.py export`")

    def _read_metadata(self) -> None:
        self.policy = ScoringPolicy.from_onnx_metadata(self.metadata)
        self.classes = self.policy.classes
        self.display_names = tuple(json.loads(self.metadata["display_names"]))
        self.size = int(self.metadata["input_height"])
        self.operating_points = self.policy.operating_points
        # a run that fused metadata chose separate thresholds for images without it
        self.operating_points_image_only = self.policy.operating_points_image_only
        self.referral_threshold = self.operating_points.get("malignant", {}).get("threshold")
        self.referral_threshold_image_only = self.operating_points_image_only.get("malignant", {}).get("threshold")
        self.clinical = self.policy.clinical
        # predict with the views the run was calibrated on, unless a call says otherwise
        self.tta = self.policy.tta
        self.ood = OodRule.from_record(json.loads(self.metadata.get("ood", "null")))
        self.outputs_run = ["probabilities"] + (["ood_score"] if self.ood is not None else [])

    @property
    def clinical_fields(self) -> dict[str, str]:
        """The metadata fields this model can fuse, each with the training data's column name."""
        return dict(self.clinical["columns"]) if self.clinical else {}

    def clinical_records(self, metadata: Sequence[Metadata]) -> dict[str, list]:
        """Per-image dicts (field or column names as keys, or None) -> the columns the metadata model reads."""
        records = {}
        for field, column in self.clinical_fields.items():
            records[column] = [None if m is None else m.get(field, m.get(column)) for m in metadata]
        return records

    def preprocess(self, image: ImageLike) -> np.ndarray:
        """One image -> uint8 [size, size, 3], exactly as training saw it."""
        return resize_center_crop(self._rgb(image), self.size)

    def _rgb(self, image: ImageLike) -> Image.Image:
        if isinstance(image, (str, os.PathLike)):
            img = load_rgb(image)
        elif isinstance(image, Image.Image):
            img = to_rgb(image)
        elif isinstance(image, np.ndarray):
            img = to_rgb(_array_to_image(image))
        else:
            raise LesionPLError(f"cannot predict on a {type(image).__name__}: give a path, a PIL image or an array")
        return img

    def score(self, outputs: Outputs | np.ndarray, metadata: Sequence[Metadata] | None = None) -> Predictions:
        """The graph's outputs (from `outputs`; or probabilities [N, C] alone) scored by the run's policy, with
        one metadata dict (or None) per image where given."""
        if not isinstance(outputs, Outputs):
            outputs = Outputs(np.asarray(outputs))
        probs = outputs.probabilities
        records = None
        if metadata is not None:
            if len(metadata) != len(probs):
                raise LesionPLError(f"{len(metadata)} metadata entries for {len(probs)} images")
            if not self.clinical:
                raise LesionPLError(f"{self.path} was exported without a clinical-metadata model; predict without "
                                    "metadata, or export a run calibrated with calibration.clinical: true")
            records = self.clinical_records(metadata)
        return Predictions(self.classes, self.policy.apply(probs, records), outputs.ood_score, self.ood)

    def predict_arrays(self, batch: np.ndarray, tta: bool | None = None,
                       metadata: Sequence[Metadata] | None = None) -> Predictions:
        """Preprocessed uint8 [N, size, size, 3] -> predictions; `tta` averages the 8 flips/rotations
        (None: as the run was calibrated, `self.tta`); `metadata`: one dict (age, sex, site) or None per image."""
        return self.score(self.outputs(batch, tta), metadata)

    def probabilities(self, batch: np.ndarray, tta: bool | None = None) -> np.ndarray:
        """The graph's calibrated image probabilities [N, C] (views averaged)."""
        return self.outputs(batch, tta).probabilities

    def outputs(self, batch: np.ndarray, tta: bool | None = None) -> Outputs:
        """The graph's calibrated image probabilities [N, C] and out-of-distribution scores [N] (views averaged),
        not yet scored: callers that predict in chunks score the whole set once."""
        batch = np.asarray(batch, dtype=np.uint8)
        views = numpy_views(batch) if (self.tta if tta is None else tta) else [batch]
        got = self.session.run(self.outputs_run, {"images": np.ascontiguousarray(np.concatenate(views))})
        probs = self.policy.mean_views(got[0].reshape(len(views), len(batch), -1))
        # lesion_pl.ood: the score of an image is the mean of its views' scores
        ood = got[1].astype(np.float64).reshape(len(views), len(batch)).mean(0) if len(got) > 1 else None
        return Outputs(probs, ood)

    def predict(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32, tta: bool | None = None,
                metadata: Metadata | Sequence[Metadata] | None = None) -> Predictions:
        if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim <= 3):
            images = [images]
            metadata = None if metadata is None else [metadata]
        parts = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            parts.append(self.outputs(np.stack([self.preprocess(im) for im in chunk]), tta))
        return self.score(Outputs.concat(parts, len(self.classes)), metadata)

    def predict_files(self, paths: Iterable[str | os.PathLike], batch_size: int = 32, tta: bool | None = None,
                      progress: bool = False, metadata: Sequence[Metadata] | None = None):
        """Predict every readable file (`metadata`: one entry per path, or None); returns (paths
        predicted, Predictions, [(path, error), ...]). `self.warnings` then holds {path: why} for the images
        predicted that should not be trusted (`image_warning`: tiny, or blank)."""
        from tqdm.auto import tqdm

        paths = list(paths)
        done, done_meta, probs, errors = [], [], [], []
        self.warnings = {}
        batch, batch_paths = [], []

        def flush():
            if batch:
                probs.append(self.outputs(np.stack(batch), tta))
                done.extend(batch_paths)
                batch.clear()
                batch_paths.clear()

        for i, p in enumerate(tqdm(paths, desc="predicting", unit="img", disable=not progress)):
            try:
                img = self._rgb(p)
                batch.append(resize_center_crop(img, self.size))
                batch_paths.append(p)
                warning = image_warning(img, self.size, batch[-1])
                if warning:
                    self.warnings[p] = warning
                done_meta.append(None if metadata is None else metadata[i])
            except (ImageReadError, LesionPLError) as e:
                errors.append((p, str(e)))
            if len(batch) == batch_size:
                flush()
        flush()
        outputs = Outputs.concat(probs, len(self.classes))
        return done, self.score(outputs, None if metadata is None else done_meta), errors
