"""Evaluation: metrics, plots and the test command's outputs."""
