# Two commands for a fresh machine with Python 3.11+ and make:
#   make run    start the platform (embedded PostgreSQL + Valkey, API on :8000, workers)
#   make test   run the whole test suite
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv

.PHONY: run test lint bench install clean-data

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# Installs exactly what uv.lock pins; re-syncs when the lock changes.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.synced

# checkov (deployment-file security checks in tests/deploy) in its own environment: its pins
# (old celery, networkx) conflict with the project's, so it stays out of uv.lock.
CHECKOV_VERSION := 3.3.30
CHECKOV := $(TOOLS)/checkov/bin/checkov
$(CHECKOV): | $(UV)
	UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python $(PYTHON) $(TOOLS)/checkov
	$(UV) pip install --quiet --python $(TOOLS)/checkov/bin/python "checkov==$(CHECKOV_VERSION)"

run: install
	$(VENV)/bin/medimg run

test: install $(CHECKOV)
	$(VENV)/bin/python -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(VENV)/bin/python -m bench

clean-data:
	rm -rf var

# Static checks of Dockerfile, docker-compose.yml and k8s/ (no Docker engine or cluster).
.PHONY: deploy-check
deploy-check: install $(CHECKOV)
	$(VENV)/bin/python -m pytest tests/deploy -q
