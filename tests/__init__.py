"""lesion-pl tests: fast by default; `pytest -m slow` for the long real-data runs."""
