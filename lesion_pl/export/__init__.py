"""Export: checkpoint -> self-describing ONNX (with parity check and optional int8), and the
torch-free onnxruntime predictor (`export.runtime.LesionOnnxClassifier`).

Importing this package imports nothing heavy; `export.runtime` needs only onnxruntime, numpy, Pillow.
"""
