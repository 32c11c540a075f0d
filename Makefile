# bioknow: `make reproduce` runs the headline comparison, `make test` runs the tests. Both install what they need.
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
PYTEST = $(PYTHON) -m pytest -q -o "markers=slow: a multi-minute test" test_bioknow.py experiments/test_tables.py

.PHONY: install install-experiments install-dev reproduce reproduce-full test test-fast bench gpu-check

# torch first: pinned to the CPU build where it lies on disk, else whatever pip finds for this machine.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_PIN) || $(PYTHON) -m pip install -q torch
	@$(PYTHON) -m pip install -q -r requirements.txt

# The experiments' report draws its figures with matplotlib, an optional dependency of experiments/ only.
install-experiments: install
	@$(PYTHON) -m pip install -q -r experiments/requirements.txt

install-dev: install-experiments
	@$(PYTHON) -m pip install -q pytest

# The headline rows -> results/reproduce.json, then results/REPORT.md rendered from it and every table in results/.
reproduce: install-experiments
	$(PYTHON) bioknow.py reproduce --jobs 2 --out results
	$(PYTHON) experiments/tables.py report --out results > /dev/null

# The paper's experiments in full (hours on 2 cores: the mixed rows give their biographies the bio rows' passes),
# each table resumable or rewritten whole, then REPORT.md re-rendered with all of them.
reproduce-full: install-experiments
	$(PYTHON) experiments/tables.py full --jobs 2 --out results
	$(PYTHON) experiments/tables.py celebrity --jobs 2 --out results
	$(PYTHON) experiments/tables.py gbert --jobs 2 --out results
	$(PYTHON) experiments/tables.py report --out results > /dev/null

test: install-dev
	$(PYTEST)

# Everything but the multi-minute tests: a few minutes on 2 cores.
test-fast: install-dev
	$(PYTEST) -m "not slow"

# Training-step speed: the default CPU preset, bioknow against a nanoGPT-style step of the same shape, and the paper's
# shape (a full batch on a GPU; two sequences a step on a CPU, where the full batch would take minutes a step).
PAPER_BENCH = $(shell $(PYTHON) -c "import torch; print('' if torch.cuda.is_available() else '--batch-size 2 --steps 2 --warmup 1')" 2>/dev/null)
bench: install
	$(PYTHON) bioknow.py bench --preset cpu
	$(PYTHON) bench/nanogpt.py --preset cpu
	$(PYTHON) bioknow.py bench --preset paper $(PAPER_BENCH)

# On a CUDA machine: the paper shape's step (tokens/s, MFU, hours for 80,000 steps), then a 300-step slice of the
# paper preset through the real pipeline (N = 100,000 multi5+permute+fullname, stream resident on the GPU).
gpu-check: install
	$(PYTHON) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA GPU here')"
	$(PYTHON) bioknow.py bench --preset paper --steps 20
	$(PYTHON) bioknow.py generate --out data/gpu-check --preset paper --aug multi5+permute+fullname --force --quiet
	$(PYTHON) bioknow.py train --data data/gpu-check --out runs/gpu-check --preset paper --steps 300 --log-every 50 --ckpt-every 0 --force --quiet
	$(PYTHON) -c "import json; r = [json.loads(l) for l in open('runs/gpu-check/log.jsonl')][-1]; \
	print(json.dumps(dict(slice_tokens_per_sec=r['tokens_per_sec'], projected_hours_80k=round(80000 * 96 * 512 / r['tokens_per_sec'] / 3600, 2))))"
