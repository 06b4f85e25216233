# Two entry points (see README): `make run` does the main job, `make test` runs the test suite.
# Both create (or reuse) the virtual environment .venv from requirements.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN    ?= runs/ham10000
FIT_ARGS ?=
# fit's wall clock, calibration included (trainer.budget): fit plans the input size and the training time to keep
# it; `make run BUDGET=` trains without one (up to the config's 80 epochs)
BUDGET ?= 00:00:30:00

.PHONY: install run test test-slow clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV)  # also repairs a half-made venv
	$(BIN)/pip install -r requirements.txt
	touch $@

install: $(VENV)/.installed

# The main job on the default data: check the data, train, evaluate on the held-out test split,
# export to ONNX (verified against PyTorch), predict a few images with the torch-free runtime
# (with their age, sex and site from the metadata CSV), and write the HTML report.
run: install
	@$(BIN)/python cli.py data summary || { \
	  printf 'Download HAM10000 (about 3 GB) into data/ now? [y/N] '; read answer || true; \
	  [ "$$answer" = y ] && $(BIN)/python cli.py data download ham10000 --to data && \
	  $(BIN)/python cli.py data summary; }
	@if [ -f $(RUN)/summary.json ]; then echo "$(RUN) is already trained; skipping fit (rm -r $(RUN) to retrain)"; \
	 else $(BIN)/python cli.py fit --out $(RUN) $(if $(BUDGET),--budget $(BUDGET)) $(FIT_ARGS); fi
	$(BIN)/python cli.py test --run $(RUN)
	$(BIN)/python cli.py export --run $(RUN) --int8
	@meta="$${LESION_PL_DATA:-data}/ham10000/HAM10000_metadata.csv"; \
	 if [ -f "$$meta" ]; then set -- --metadata "$$meta"; fi; \
	 $(BIN)/python cli.py predict "$${LESION_PL_DATA:-data}/ham10000" --model $(RUN)/export/model.onnx --limit 8 \
	   --out $(RUN)/export/predictions_sample.csv "$$@"
	$(BIN)/python cli.py report --run $(RUN)

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy lesion_pl/config lesion_pl/scoring.py lesion_pl/ood.py
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

clean-venv:
	rm -rf $(VENV)
