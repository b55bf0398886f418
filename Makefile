# The two set-up commands: `make run` (the embedded offline demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# exactly this torch: the CPU wheel on the machine; any other spec pulls the CUDA build
TORCH  := torch==2.13.0

.PHONY: test run ui bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[test]" $(TORCH)
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

run: $(STAMP)
	$(VENV)/bin/dvc repro
	@echo "Report: reports/report.md (and reports/report.html)"

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench: $(STAMP)
	$(PY) bench/model_speed.py

clean:
	rm -rf $(VENV)
