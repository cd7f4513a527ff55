# One-command set-up: `make test` and `make demo` install into .venv first when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15 tests

# The pipeline on the embedded synthetic scenes: train, evaluate, segment one image.
DEMO_DIR ?= runs/demo
DEMO_STEPS ?= 800
demo: $(STAMP)
	$(PY) -m train.train --model_dir $(DEMO_DIR)/fs1 --filter_scale 1 --steps $(DEMO_STEPS) \
	    --log_every 50
	$(PY) -m train.evaluate --model_dir $(DEMO_DIR)/fs1 --num_images 100 \
	    --json $(DEMO_DIR)/fs1/eval.json
	$(PY) -m icnet.data.synthetic --out $(DEMO_DIR)/scenes --train 0 --val 1 --size 512x1024
	$(PY) -m deploy.predict --weights $(DEMO_DIR)/fs1 \
	    --image $(DEMO_DIR)/scenes/leftImg8bit/val/synth/synth_000000_000019_leftImg8bit.png \
	    --output $(DEMO_DIR)/overlay.png

clean:
	rm -rf $(VENV) runs exports reports/*.png .pytest_cache
