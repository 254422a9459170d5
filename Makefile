# Developer workflow for netpol.cilium. Needs only python3 (3.11) and the package registries; everything else
# is installed into .venv and .cache/ on first use. `make help` lists the targets.

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
CHECKS := $(VENV_PY) scripts/run_checks.py
# For commands that use the collection in place: kubernetes.core and netpol.cilium from .cache/collections, the
# simulated cluster (tests/simcluster) importable as `simcluster`.
TOOLS_ENV := env PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
	ANSIBLE_COLLECTIONS_PATH="$(CURDIR)/.cache/collections" \
	PYTHONPATH="$(CURDIR)/.cache/collections:$(CURDIR)/tests$${PYTHONPATH:+:$$PYTHONPATH}"

.DEFAULT_GOAL := help
.PHONY: help venv layout test lint sanity units integration molecule demo bench clean distclean

help: ## Show this help
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 16

venv: ## Create .venv and install the pinned development tools (skipped while up to date)
	@$(PYTHON) scripts/bootstrap.py

layout: venv ## Lay out .cache/collections (kubernetes.core + a link to this collection)
	@$(VENV_PY) scripts/layout_collections.py

test: layout ## Run every check: ruff, ansible-lint, sanity, changelog lint, unit, integration, molecule
	@$(CHECKS)

lint: layout ## ruff, ansible-lint and antsibull-changelog lint
	@$(CHECKS) ruff ansible-lint changelog

sanity: layout ## ansible-test sanity on a copy of the collection in .cache/ansible-test
	@$(CHECKS) sanity

units: layout ## Unit tests (tests/unit, tests/harness)
	@$(CHECKS) unit

integration: layout ## Integration tests against the simulated cluster (tests/integration)
	@$(CHECKS) integration

molecule: layout ## Molecule scenarios in extensions/molecule
	@$(CHECKS) molecule

demo: layout ## Run scripts/demo.py
	@test -f scripts/demo.py || { echo "scripts/demo.py does not exist yet"; exit 1; }
	@$(TOOLS_ENV) $(VENV_PY) scripts/demo.py

bench: layout ## Benchmarks (ratios against a baseline measured in the same run): audit mode, flow files, Relay stream, fleet, soak
	@$(TOOLS_ENV) $(VENV_PY) scripts/bench.py $(BENCH_AUDIT_ARGS)
	@$(TOOLS_ENV) $(VENV_PY) scripts/bench_flows.py $(BENCH_FLOWS_ARGS)
	@$(TOOLS_ENV) $(VENV_PY) scripts/bench_relay.py $(BENCH_RELAY_ARGS)
	@$(TOOLS_ENV) $(VENV_PY) scripts/bench_fleet.py $(BENCH_FLEET_ARGS)
	@$(TOOLS_ENV) $(VENV_PY) scripts/bench_soak.py $(BENCH_SOAK_ARGS)

clean: ## Remove caches and test output (keeps .venv)
	rm -rf .cache tests/output .pytest_cache .ruff_cache
	find . -path ./.venv -prune -o -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## Also remove .venv
	rm -rf $(VENV)
