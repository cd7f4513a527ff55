# One-command set-up: `make test` and `make demo` install into .venv first when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2
# MediaPipe (a client of the exported .tflite files, as in an app) needs absl-py 2.x; the kit's
# tensorflow-model-optimization needs absl-py 1.x: MediaPipe gets an environment of its own.
MEDIAPIPE_VENV ?= .venv-mediapipe
MEDIAPIPE_STAMP := $(MEDIAPIPE_VENV)/.installed

# A private software Vulkan device (Mesa's lavapipe) for LiteRT's GPU accelerator, as root on
# Debian bookworm: the GPU delegate's numerics on a machine without a GPU.
GPU_SIM_DIR ?= .gpu-sim

.PHONY: install mediapipe-env gpu-sim test demo clean

install: $(STAMP)

mediapipe-env: $(MEDIAPIPE_STAMP)

gpu-sim:
	sh tools/install_gpu_sim.sh $(GPU_SIM_DIR)

$(MEDIAPIPE_STAMP): clients/requirements-mediapipe.txt
	$(PYTHON) -m venv $(MEDIAPIPE_VENV)
	$(MEDIAPIPE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MEDIAPIPE_VENV)/bin/python -m pip install --quiet -r clients/requirements-mediapipe.txt
	$(MEDIAPIPE_VENV)/bin/python -m pip check
	touch $(MEDIAPIPE_STAMP)

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

test: $(STAMP) $(MEDIAPIPE_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=15 tests

# The kit's main job on the embedded synthetic street scenes, in six steps: render sample
# scenes, train a full-width ICNet, prune it to half width with fine-tuning (and fine-tune the
# source as long: the equal-budget control) and export every quantization and format with
# parity checks and accuracy floors (deploy.export), benchmark every artifact under every
# runtime (the slow reference kernels left out), write the report, segment a scene with the
# pruned int8 model. The variables below size it; the
# tests run the same recipe with a tiny model and input (tests/test_demo.py).
DEMO_DIR ?= runs/demo
REPORT_DIR ?= reports
DEMO_INPUT_SIZE ?= 1025x2049
DEMO_SCENE_SIZE ?= 1024x2048
DEMO_FILTER_SCALE ?= 2
DEMO_STEPS ?= 200
DEMO_BATCH ?= 8
DEMO_CROP ?= 256x512
DEMO_SCENES ?= 100
DEMO_FINETUNE_STEPS ?= 100
DEMO_QAT_STEPS ?= 20
DEMO_CALIBRATION ?= 16
DEMO_PARITY ?= 5
DEMO_EVAL ?= 10
DEMO_FLOOR_FLAGS ?=
# run: every .tflite also through LiteRT's GPU accelerator (after `make gpu-sim` on a machine
# without a GPU; about 8 more minutes on the software device at this size).
DEMO_GPU_CHECK ?= analyzer
DEMO_BENCH_FLAGS ?= --threads 2 --warmup 2 --runs 5 --rounds 1 \
    --runtimes tf,onnx,openvino,tflite_xnnpack,tflite_xnnpack_fp16,tflite_gpu
DEMO_SCENE_FLAGS = --synthetic_size $(DEMO_SCENE_SIZE) --synthetic_count $(DEMO_SCENES) \
    --crop_size $(DEMO_CROP) --batch_size $(DEMO_BATCH)
DEMO_SAMPLE = $(DEMO_DIR)/scenes/leftImg8bit/val/synth/synth_000000_000019_leftImg8bit.png

demo: $(STAMP) $(MEDIAPIPE_STAMP)
	@echo "== demo 1/6: render sample street scenes ($(DEMO_SCENE_SIZE)) into $(DEMO_DIR)/scenes"
	$(PY) -m icnet.data.synthetic --output_dir $(DEMO_DIR)/scenes --train 0 --val 2 \
	    --size $(DEMO_SCENE_SIZE)
	@echo "== demo 2/6: train a full-width ICNet (filter_scale $(DEMO_FILTER_SCALE), $(DEMO_STEPS) steps)"
	$(PY) -m train.train --model_dir $(DEMO_DIR)/full --filter_scale $(DEMO_FILTER_SCALE) \
	    --steps $(DEMO_STEPS) $(DEMO_SCENE_FLAGS) --log_every 10
	@echo "== demo 3/6: prune to half width, fine-tune (and the equal-budget control), quantize, export, verify"
	$(PY) -m deploy.export --model $(DEMO_DIR)/full --export_dir $(DEMO_DIR)/export \
	    --overwrite --prune --keep 0.5 --finetune_steps $(DEMO_FINETUNE_STEPS) --control \
	    --learning_rate 1e-3 --synthetic_size $(DEMO_SCENE_SIZE) \
	    --input_size $(DEMO_INPUT_SIZE) \
	    --quantize fp32,fp16,dynamic,int8,qat --formats saved_model,tflite,onnx,openvino \
	    --qat_steps $(DEMO_QAT_STEPS) --calibration_images $(DEMO_CALIBRATION) \
	    --parity_images $(DEMO_PARITY) --eval_images $(DEMO_EVAL) $(DEMO_FLOOR_FLAGS) \
	    --gpu_check $(DEMO_GPU_CHECK)
	@echo "== demo 4/6: benchmark every artifact"
	$(PY) -m benchmarks.latency --export_dir $(DEMO_DIR)/export $(DEMO_BENCH_FLAGS) \
	    --json $(DEMO_DIR)/latency.json
	@echo "== demo 5/6: the report"
	$(PY) -m benchmarks.report --export_dir $(DEMO_DIR)/export \
	    --latency $(DEMO_DIR)/latency.json --output_dir $(REPORT_DIR)
	@echo "== demo 6/6: segment a scene with the pruned int8 TFLite model"
	$(PY) -m deploy.predict --model $(DEMO_DIR)/export/tflite/icnet_int8.tflite \
	    --image $(DEMO_SAMPLE) --output $(DEMO_DIR)/overlay.png
	@echo "== demo done: $(REPORT_DIR)/REPORT.md, $(DEMO_DIR)/export, $(DEMO_DIR)/overlay.png"

clean:
	rm -rf $(VENV) $(MEDIAPIPE_VENV) $(GPU_SIM_DIR) runs exports .pytest_cache
