"""`lesion_pl.export.runtime`, under the checkout's older name: the predictor another application runs."""
from lesion_pl.export.runtime import LesionOnnxClassifier, Predictions  # noqa: F401
