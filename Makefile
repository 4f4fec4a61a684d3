# Two entry points that work on a fresh machine with only Python 3.11:
#   make demo   - the whole product end to end on the embedded defaults
#   make test   - the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench-import clean screenshots

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/relance demo

test: install
	$(BIN)/pytest -q -n 2 --dist loadgroup

# E-mail screenshots at phone (375px) and desktop (1200px) widths, in previews/screenshots/
screenshots: install
	RELANCE_SCREENSHOTS_DIR=$(CURDIR)/previews/screenshots $(BIN)/pytest -q -m browser tests/test_email_browser.py

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf outbox reports previews demo-data relance.db relance.db-wal relance.db-shm
