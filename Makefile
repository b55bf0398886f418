# The two set-up commands: `make run` (the embedded offline demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# exactly this torch: the CPU wheel on the machine; any other spec pulls the CUDA build
TORCH  := torch==2.13.0
# dvc.yaml's commands call python and torchrun: the venv's, whatever the shell has
BIN_PATH := PATH=$(CURDIR)/$(VENV)/bin:$$PATH
# an install is redone when pyproject.toml or setup.py changes
HASH   := $(shell cat pyproject.toml setup.py | cksum | cut -d' ' -f1)
# An editable install gets no .pth from setup.py's build hook: write the alias's (see bert/compat/__init__.py).
ALIAS_PTH = $(PY) -c 'import sysconfig, bert.compat as c, pathlib; \
	pathlib.Path(sysconfig.get_paths()["purelib"], c.PTH_NAME).write_text(c.ALIAS_PATH + "\n")'


.PHONY: test run pretrain flow ui bench install clean

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

ui: $(VENV)/.pipeline-$(HASH)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench: $(VENV)/.test-$(HASH)
	$(PY) bench/model_speed.py

clean:
	rm -rf $(VENV)
