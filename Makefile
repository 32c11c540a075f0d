# bioknow: `make reproduce` runs the headline comparison, `make test` runs the tests. Both install what they need.
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0

.PHONY: install install-dev reproduce test

# torch first: pinned to the CPU build where it lies on disk, else whatever pip finds for this machine.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_PIN) || $(PYTHON) -m pip install -q torch
	@$(PYTHON) -m pip install -q -r requirements.txt

install-dev: install
	@$(PYTHON) -m pip install -q pytest

reproduce: install
	$(PYTHON) bioknow.py reproduce --out results

test: install-dev
	$(PYTHON) -m pytest -q test_bioknow.py
