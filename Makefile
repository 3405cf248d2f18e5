# twin_pipeline — everything installs from this repository's own files (Python 3.11 + make).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
UV_VERSION := 0.13.8
BOOT := .uv-bootstrap
UV := $(BOOT)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export UV_PYTHON_DOWNLOADS := never
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast ui dagster-ui mlflow-ui backfill clean-data clean benchmarks

$(UV):
	$(PYTHON) -m venv $(BOOT)
	$(BOOT)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra dev --python $(PYTHON)
	touch $@

# .env is yours to edit: created from .env.example, later only gains variables it lacks
.env: .env.example
	@touch .env
	@awk -F= 'NR==FNR { if ($$0 ~ /^[A-Z_]+=/) have[$$1]=1; next } /^[A-Z_]+=/ && !($$1 in have)' .env .env.example >> .env
	@touch .env

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

setup: $(VENV)/.synced .env $(DAGSTER_HOME)/dagster.yaml

## make demo: generate the demo cohort (3 sites) and materialize every asset; prints where to look
demo: setup
	$(BIN)/twin-pipeline demo

## make test: the whole test suite (what CI runs)
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

## make ui: Dagster webserver + daemon (http://127.0.0.1:3000) and MLflow UI (http://127.0.0.1:5000)
ui: setup
	@echo "Dagster UI: http://127.0.0.1:3000   MLflow UI: http://127.0.0.1:5000   (Ctrl-C stops both)"
	@trap 'kill 0' INT TERM EXIT; \
	  $(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///data/mlflow/mlflow.db \
	    --default-artifact-root data/mlflow/artifacts & \
	  $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

dagster-ui: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

mlflow-ui: setup
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///data/mlflow/mlflow.db \
	  --default-artifact-root data/mlflow/artifacts

## make backfill: materialize every complete delivery in the landing area, then twins and models
backfill: setup
	$(BIN)/twin-pipeline backfill

clean-data:
	rm -rf data/landing data/quarantine data/ground_truth data/warehouse data/mlflow $(DAGSTER_HOME)

clean: clean-data
	rm -rf $(VENV) $(BOOT)
