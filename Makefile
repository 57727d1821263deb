# kit: every target creates .venv and installs the package on first use.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
COMP    ?= titanic
KIT      = $(PY) -m kit

# Optional: DATA (training data), TEST (test data), OUT (submission path), RUN (run id), SET ("k=v k=v")
ARGS = --comp $(COMP) $(foreach s,$(SET),--set $(s))

.PHONY: setup train predict test lint clean help

help:  ## list targets
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv and install kit with its dev tools

train: setup  ## k-fold CV training -> runs/$(COMP)/<run-id>/
	$(KIT) train $(ARGS) $(if $(DATA),--data $(DATA))

predict: setup  ## fold ensemble on the test set -> submission.csv
	$(KIT) predict $(ARGS) $(if $(RUN),--run $(RUN)) $(if $(TEST),--test $(TEST)) $(if $(OUT),--out $(OUT))

test: setup  ## run the test suite
	$(PY) -m pytest

lint: setup  ## ruff
	$(VENV)/bin/ruff check kit tests competitions ui

clean:  ## remove runs/ and exports (keeps .venv)
	rm -rf runs exports/*/
