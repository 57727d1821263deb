# kit: every target creates .venv and installs the package on first use.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
COMP    ?= titanic
KIT      = $(PY) -m kit

# Optional: DATA (training data), TEST (test data), OUT (submission path), RUN (run id), SET ("k=v k=v"),
# FROM (run | export), BACKEND (onnx | torchscript), RESUME (1 = the latest run, or a run id),
# NPROC (processes under torchrun), PARALLEL (data | folds, with NPROC), DEVICE (auto | cpu | cuda: predict,
# export, bench), GPU=1 (setup: onnxruntime-gpu instead of onnxruntime), RECIPE (a file beside the config laid
# over it: RECIPE=gpu reads competitions/$(COMP)/gpu.yaml), TORCH=cpu (setup: PyTorch's CPU-only wheels)
# TIME (90s, 10m, 1h): make train's budget for training and prediction (kit/budget.py), or make tune's search time;
# TRIALS, STORAGE (an Optuna database URL): make tune
ARGS = $(strip --comp $(COMP) $(if $(RECIPE),--recipe $(RECIPE)) $(foreach s,$(SET),--set $(s)))

# Each recipe is one line: make echoes a command as written, so a `\`-continued recipe printed its backslash and
# an indented line of blanks where the empty $(if ...) went.
TRAIN_ARGS = $(strip $(if $(DATA),--data $(DATA)) $(if $(NPROC),--nproc_per_node $(NPROC)) \
	$(if $(RESUME),--resume $(if $(filter 1,$(RESUME)),latest,$(RESUME))) $(if $(PARALLEL),--parallel $(PARALLEL)) \
	$(if $(TIME),--time $(TIME)))
PREDICT_ARGS = $(strip $(if $(RUN),--run $(RUN)) $(if $(TEST),--test $(TEST)) $(if $(OUT),--out $(OUT)) \
	$(if $(FROM),--from $(FROM)) $(if $(BACKEND),--backend $(BACKEND)) $(if $(DEVICE),--device $(DEVICE)) \
	$(if $(TRUST_CODE),--trust-code))

# make bench measures an image pipeline: food101-10 unless COMP is given on the command line.
BENCH_COMP = $(if $(filter command line,$(origin COMP)),$(COMP),food101-10)

# `make train SET=cv.folds=3 train.epochs=2` (unquoted): the shell splits it and make takes train.epochs=2 as a
# make variable, which kit would never see. No make variable has a dot in its name, so such a command-line
# variable is a config override that lost its quotes: stop and show the quoted command instead.
DOTTED := $(strip $(foreach v,$(.VARIABLES),$(if $(findstring .,$(v)),$(if $(filter command line,$(origin $(v))),$(v)))))
ifneq ($(DOTTED),)
$(error $(foreach v,$(DOTTED),$(v)=$($(v))) is a config override, but make took it as a make variable and kit \
would not see it; quote the overrides as one SET: make $(or $(MAKECMDGOALS),train) \
SET="$(strip $(SET) $(foreach v,$(DOTTED),$(v)=$($(v))))"$(if $(filter command line,$(origin COMP)), COMP=$(COMP)))
endif

PORT    ?= 7860
EXPORTS ?= exports

.PHONY: setup new train predict compare export ui data tune bench doctor test lint docs docs-serve clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

# TORCH=cpu: PyTorch's CPU-only wheels first (PyPI's Linux torch is the CUDA build, about 3 GB of CUDA libraries);
# the install below then keeps them, since they satisfy kit's torch requirement.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(if $(filter cpu,$(TORCH)),$(VENV)/bin/pip install torch torchvision --index-url $(TORCH_CPU_INDEX))
	$(VENV)/bin/pip install -e '.[dev]'
	touch $@

# GPU=1: ONNX Runtime's CUDA build (the `gpu` extra). onnxruntime and onnxruntime-gpu install the same
# `onnxruntime` module, and pip cannot drop a base dependency through an extra, so both are removed and the GPU
# wheel is put back alone. Once done, the stamp keeps GPU=1 on for later reinstalls.
GPU ?= $(if $(wildcard $(VENV)/.onnxruntime-gpu),1)

$(VENV)/.onnxruntime-gpu: $(VENV)/.installed
	$(VENV)/bin/pip install -e '.[dev,gpu]'
	$(VENV)/bin/pip uninstall -y onnxruntime onnxruntime-gpu
	$(VENV)/bin/pip install --no-deps 'onnxruntime-gpu'
	touch $@

setup: $(VENV)/.installed $(if $(GPU),$(VENV)/.onnxruntime-gpu)  ## create .venv and install kit (GPU=1: ONNX on CUDA)

# make new: COMP names the folder to create, so it must be given (the titanic default would be wrong here).
ifneq ($(filter new,$(MAKECMDGOALS)),)
ifeq ($(filter command line environment,$(origin COMP)),)
$(error make new needs COMP=<name>, the competition folder to create: make new COMP=bikes DATA=~/kaggle/bikes)
endif
ifeq ($(DATA),)
$(error make new needs DATA=<folder> holding train.csv and test.csv: make new COMP=$(COMP) DATA=~/kaggle/$(COMP))
endif
endif

NEW_ARGS = $(strip --comp $(COMP) --data "$(DATA)" $(if $(METRIC),--metric "$(METRIC)") \
	$(if $(TARGET),--target "$(TARGET)") $(if $(ID),--id "$(ID)") $(if $(IMAGES),--images "$(IMAGES)") \
	$(if $(TEST),--test "$(TEST)") $(if $(filter 1,$(FORCE)),--force))

new: setup  ## competitions/$(COMP)/config.yaml from DATA=<folder with train.csv, test.csv> (METRIC, TARGET, ID, IMAGES, TEST, FORCE=1)
	$(KIT) new $(NEW_ARGS)

train: setup  ## k-fold CV training -> runs/$(COMP)/<run-id>/ (TIME=10m spends a budget, RESUME=1 continues, NPROC=N: torchrun)
	$(KIT) train $(ARGS) $(TRAIN_ARGS)

predict: setup  ## fold ensemble on the test set -> submission.csv
	$(KIT) predict $(ARGS) $(PREDICT_ARGS)

compare: setup  ## is run B better than run A beyond the noise? A=<run-id> B=<run-id> (same folds; cv.repeats helps)
	$(KIT) compare $(ARGS) $(A) $(B)

export: setup  ## TorchScript + ONNX of the run's fold ensemble -> exports/$(COMP)/, parity-checked
	$(KIT) export $(ARGS) $(if $(RUN),--run $(RUN)) $(if $(DATA),--data $(DATA)) $(if $(DEVICE),--device $(DEVICE))

# --trust-code: a tabular export may carry its feature code (features.py, run only if its sha256 matches meta.json),
# and the app runs it only when trusted. The exports in exports/ are written by this checkout's own `make export`, so
# `make ui` trusts them; for exports made by someone else (EXPORTS=...), run `python -m ui.app` without the flag:
# such an export's tab then says it needs the opt-in, and image exports (which never carry code) serve as usual.
ui: setup  ## Gradio app over the exports, on http://127.0.0.1:$(PORT)
	$(PY) -m ui.app --port $(PORT) --exports $(EXPORTS) --trust-code

data: setup  ## download the competition data (Kaggle credentials), or print the manual steps
	$(KIT) data $(ARGS) $(if $(DATA),--data $(DATA))

tune: setup  ## search each learner's settings by CV with Optuna; writes competitions/$(COMP)/tuned.yaml (TRIALS, TIME, STORAGE)
	$(KIT) tune $(ARGS) $(if $(TRIALS),--trials $(TRIALS)) $(if $(TIME),--time $(TIME)) $(if $(STORAGE),--storage "$(STORAGE)")

bench: setup  ## training and predict images/s against the model-only ceiling on this device (RECIPE=gpu, DEVICE)
	$(KIT) bench --comp $(BENCH_COMP) $(if $(RECIPE),--recipe $(RECIPE)) $(foreach s,$(SET),--set $(s)) $(if $(DATA),--data $(DATA)) $(if $(DEVICE),--device $(DEVICE))

# make doctor needs no setup and no network: .venv's python when there is one, else $(PYTHON) with the packages
# already installed (a lent GPU machine's system python).
DOCTOR_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))

doctor:  ## prove this machine in < 5 min: torch/CUDA/ONNX Runtime, then GPU tests, bench, train, predict, export
	$(DOCTOR_PY) -m kit doctor

test: setup  ## run the test suite
	$(PY) -m pytest

lint: setup  ## ruff
	$(VENV)/bin/ruff check kit tests competitions ui docs

# The configuration page is generated from kit/config.py while building (docs/config_reference.py, a MkDocs hook).
docs: setup  ## build the documentation site into site/ (strict: a broken link or an undocumented config key fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: setup  ## the documentation site on http://127.0.0.1:8000, rebuilt as pages change
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:  ## remove runs/, exports and the built docs (keeps .venv)
	rm -rf runs exports/*/ site
