# Two entry points for a fresh machine (see README):
#   make demo   set up .venv and run the demo on a generated QuPath project
#   make test   set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# torch: CPU build pinned for this machine/CI (2.13.0 is on local disk). On a GPU machine use
#   make TORCH_SPEC=torch demo   (or plain `pip install qupath-camseg`) to get CUDA torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup setup-test demo test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(VENV)/bin/python
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .

setup-test: $(VENV)/bin/python
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	bash scripts/opencv_envs.sh $(PY)   # QuPath's OpenCV builds (4.6/4.10/4.11) for the export parity tests
	bash scripts/fetch_groovy.sh        # Groovy 4.0.26 (QuPath 0.6's) for the Groovy-bridge tests

demo: setup
	$(VENV)/bin/qcamseg demo --out demo-out

test: setup-test
	$(PY) -m pytest -q
	QCAMSEG_MP_START=spawn $(PY) -m pytest -q -m multiprocessing   # as macOS and Windows start workers
	$(VENV)/bin/deptry .                                           # imports == declared dependencies

clean:
	rm -rf demo-out .pytest_cache
