# The two set-up commands: `make run` (the embedded offline demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# exactly this torch: the CPU wheel on the machine; any other spec pulls the CUDA build
TORCH  := torch==2.13.0
# the venv's bin first on PATH: what dvc, mlflow and Prefect start by name (dvc.yaml's stages: bin/python)
BIN_PATH := PATH=$(CURDIR)/$(VENV)/bin:$$PATH
# an install is redone when pyproject.toml or setup.py changes
HASH   := $(shell cat pyproject.toml setup.py | cksum | cut -d' ' -f1)
# An editable install gets no .pth from setup.py's build hook: write the alias's (see bert/compat/__init__.py).
ALIAS_PTH = $(PY) -c 'import sysconfig, bert.compat as c, pathlib; \
	pathlib.Path(sysconfig.get_paths()["purelib"], c.PTH_NAME).write_text(c.ALIAS_PATH + "\n")'


.PHONY: test run pretrain flow ui serve bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.pipeline-$(HASH): | $(PY)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[pipeline]" $(TORCH)
	$(ALIAS_PTH)
	touch $@

$(VENV)/.test-$(HASH): | $(PY)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[test]" $(TORCH)
	$(ALIAS_PTH)
	touch $@ $(VENV)/.pipeline-$(HASH)

install: $(VENV)/.test-$(HASH)

test: $(VENV)/.test-$(HASH)
	$(BIN_PATH) $(PY) -m pytest -q -n 2 --dist loadgroup --durations=30

# the pipeline run in MLflow is this command's: created before dvc starts, FAILED if dvc fails or is interrupted
run: $(VENV)/.pipeline-$(HASH)
	$(BIN_PATH) $(PY) -m pipeline.track --pipeline -- $(VENV)/bin/dvc repro
	@echo "Report: reports/report.md (and reports/report.html)"

pretrain: $(VENV)/.pipeline-$(HASH)
	$(BIN_PATH) $(PY) -m pipeline.track --pipeline -- $(VENV)/bin/dvc repro pretrain/dvc.yaml

flow: $(VENV)/.pipeline-$(HASH)
	$(BIN_PATH) $(PY) -m pipeline.flow

# MLflow 3's UI opens an experiment in its GenAI view unless the address asks for the classic one: print that address
ui: $(VENV)/.pipeline-$(HASH)
	@echo "MLflow UI: $$($(PY) -m pipeline.tracking url http://127.0.0.1:5000)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# a task's champion (the report's choice, registered by the last `make run`) as a REST service on 127.0.0.1:5001;
# mlflow starts uvicorn from PATH: the venv's
TASK ?= demo-pair
serve: $(VENV)/.pipeline-$(HASH)
	$(BIN_PATH) MLFLOW_TRACKING_URI=sqlite:///mlflow.db $(VENV)/bin/mlflow models serve \
		-m models:/bert-$(TASK)@champion --env-manager local --host 127.0.0.1 --port 5001

bench: $(VENV)/.test-$(HASH)
	$(PY) bench/model_speed.py

clean:
	rm -rf $(VENV)
