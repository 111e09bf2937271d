# Two commands do all the set-up on a fresh machine (Python 3.11 and make are all it needs):
#   make run    the main job: notebooks 01-05, headless, on the generated synthetic faces
#   make test   the test suite
#   make figures  the main job, then its figures copied into figures/ (the README's; tracked by git)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test smoke lab figures

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/facelib notebooks --profile default --out runs/main

figures: $(VENV)/.installed
	$(BIN)/facelib notebooks --profile default --out runs/main --refresh-figures

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

smoke: $(VENV)/.installed
	$(BIN)/facelib notebooks --profile smoke --out runs/smoke

lab: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks/
