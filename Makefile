# Noctis developer commands. `make run` and `make test` work on a fresh clone:
# they create .venv with every package installed in editable mode.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := libs/common services/ingest-scp services/qido services/wado services/stow services/archive
STAMP := $(VENV)/.installed
SOURCES := libs/common/noctis_common services/ingest-scp/noctis_ingest_scp services/qido/noctis_qido \
	services/wado/noctis_wado services/stow/noctis_stow services/archive/noctis_archive

.PHONY: venv run test lint typecheck unit clean system-deps

venv: $(STAMP)

$(STAMP): constraints.txt requirements-dev.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -r requirements-dev.txt $(foreach p,$(PACKAGES),-e $(p))
	touch $(STAMP)

# Debian packages the end-to-end tests drive: dcmtk (storescu, echoscu, dcmsend).
system-deps:
	@command -v storescu >/dev/null && command -v dcmsend >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk; }

run: venv
	$(BIN)/python -m noctis_archive

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy $(SOURCES) tests

test: venv system-deps lint typecheck
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
