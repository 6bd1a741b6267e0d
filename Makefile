# Two commands: `make demo` (install into .venv, run configs/demo.toml) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test install clean-results

demo: $(VENV)/.installed
	$(BIN)/lipsim run configs/demo.toml

test: $(VENV)/.installed
	$(BIN)/python -m pytest

install: $(VENV)/.installed

# torch/torchvision pinned to the releases this project is tested with; the rest from pyproject.toml
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=lenient
	touch $@

clean-results:
	rm -rf results/demo
