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
from lesion_pl.preprocess import ImageReadError, image_warning, load_rgb, numpy_views, resize_center_crop, to_rgb
from lesion_pl.scoring import Scored, ScoringPolicy

from .metadata import PREFIX, REQUIRED

ImageLike = str | os.PathLike | Image.Image | np.ndarray
REFER, NO_REFER = "refer", "no referral at this threshold"
Metadata = Mapping[str, object] | None  # one image's age, sex and site


@dataclass
class Predictions:
    classes: tuple[str, ...]
    scored: Scored  # what the run's ScoringPolicy made of the model's probabilities

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
        return [self.classes[i] for i in self.top_index]

    @property
    def top_probability(self) -> np.ndarray:
        return self.probabilities[np.arange(len(self.probabilities)), self.top_index]

    def __len__(self) -> int:
        return len(self.probabilities)

    def rows(self, names: Sequence[str], warnings: Mapping[str, str] | None = None) -> list[dict]:
        """One plain dict per image (as `predict --out x.json` writes them): its name, top class and probability,
        malignancy, referral, whether metadata was fused, every class's probability, and any warning."""
        refer = self.refer if self.refer is not None else [None] * len(self)
        used = self.with_metadata if self.with_metadata is not None else [None] * len(self)
        out = []
        for name, top, p, mal, r, u, probs in zip(names, self.top_class, self.top_probability, self.malignancy, refer,
                                                  used, self.probabilities, strict=True):
            out.append({"file": str(name), "top_class": top, "probability": round(float(p), 6),
                        "malignancy": round(float(mal), 6), "referral": "" if r is None else (REFER if r else NO_REFER),
                        **({} if u is None else {"metadata": "yes" if u else "no"}),
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

    def score(self, probs: np.ndarray, metadata: Sequence[Metadata] | None = None) -> Predictions:
        """The graph's probabilities [N, C] (from `probabilities`) scored by the run's policy, with one metadata
        dict (or None) per image where given."""
        records = None
        if metadata is not None:
            if len(metadata) != len(probs):
                raise LesionPLError(f"{len(metadata)} metadata entries for {len(probs)} images")
            if not self.clinical:
                raise LesionPLError(f"{self.path} was exported without a clinical-metadata model; predict without "
                                    "metadata, or export a run calibrated with calibration.clinical: true")
            records = self.clinical_records(metadata)
        return Predictions(self.classes, self.policy.apply(probs, records))

    def predict_arrays(self, batch: np.ndarray, tta: bool | None = None,
                       metadata: Sequence[Metadata] | None = None) -> Predictions:
        """Preprocessed uint8 [N, size, size, 3] -> predictions; `tta` averages the 8 flips/rotations
        (None: as the run was calibrated, `self.tta`); `metadata`: one dict (age, sex, site) or None per image."""
        return self.score(self.probabilities(batch, tta), metadata)

    def probabilities(self, batch: np.ndarray, tta: bool | None = None) -> np.ndarray:
        """The graph's calibrated image probabilities [N, C] (views averaged), not yet scored: callers that
        predict in chunks score the whole set once."""
        batch = np.asarray(batch, dtype=np.uint8)
        if self.tta if tta is None else tta:
            views = numpy_views(batch)
            out = self.session.run(["probabilities"], {"images": np.ascontiguousarray(np.concatenate(views))})[0]
            probs = self.policy.mean_views(out.reshape(len(views), len(batch), -1))
        else:
            probs = self.session.run(["probabilities"], {"images": np.ascontiguousarray(batch)})[0]
        return probs

    def predict(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32, tta: bool | None = None,
                metadata: Metadata | Sequence[Metadata] | None = None) -> Predictions:
        if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim <= 3):
            images = [images]
            metadata = None if metadata is None else [metadata]
        parts = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            parts.append(self.probabilities(np.stack([self.preprocess(im) for im in chunk]), tta))
        return self.score(np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32), metadata)

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
                probs.append(self.probabilities(np.stack(batch), tta))
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
        all_probs = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)), np.float32)
        return done, self.score(all_probs, None if metadata is None else done_meta), errors
