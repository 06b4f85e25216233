"""The ONNX export and the torch-free runtime live in the package, lesion_pl/export/ (`lesion_pl.export`), so that an
installed lesion-pl has them; this folder keeps the checkout's `from export.runtime import LesionOnnxClassifier`."""
