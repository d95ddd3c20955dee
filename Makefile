# The two commands a user needs: `make serve` and `make test`. CI runs `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: serve test check bench install install-dev clean

$(VENV)/.installed: pyproject.toml
	bash scripts/install
	touch $@

$(VENV)/.installed-dev: pyproject.toml
	bash scripts/install dev
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

serve: install
	$(VENV)/bin/nanotypedb serve

test: install-dev
	bash scripts/check
	bash scripts/test

check: install-dev
	bash scripts/check

bench: install-dev
	bash scripts/bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
