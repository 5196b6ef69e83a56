# Relay: `make run` serves it, `make test` checks it. Both set up everything they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test lint bench soak migrate clean translations messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

migrate: $(VENV)/.installed
	$(BIN)/flask --app app db upgrade

# The interface's languages: translations/<lang>/LC_MESSAGES/messages.po, compiled here.
MO_FILES := $(patsubst %.po,%.mo,$(wildcard translations/*/LC_MESSAGES/messages.po))
translations: $(MO_FILES)

translations/%/LC_MESSAGES/messages.mo: translations/%/LC_MESSAGES/messages.po | $(VENV)/.installed
	$(BIN)/pybabel -q compile -i $< -o $@

# After changing the interface's text: the template (.pot) again, and every catalog updated.
messages: $(VENV)/.installed
	$(BIN)/pybabel -q extract -F babel.cfg --no-location --sort-output -k _l -k Nn_:1,2 \
		--project Relay --version 1 -o translations/messages.pot .
	$(BIN)/pybabel -q update -i translations/messages.pot -d translations --no-fuzzy-matching --ignore-obsolete

run: migrate translations
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# The browser tests (Chromium) run in a process of their own, after the others: on a small
# machine the two halves side by side fight for the CPU and take longer than one after the
# other. `make test PYTEST_ARGS=...` runs just what it names, in one process.
test: $(VENV)/.installed-dev translations
	$(BIN)/ruff check .
ifeq ($(strip $(PYTEST_ARGS)),)
	@rc=0; \
	$(BIN)/python -m pytest --ignore=tests/browser || rc=$$?; \
	echo; echo "==== browser tests ===="; \
	$(BIN)/python -m pytest -p no:cacheprovider tests/browser || rc=$$?; \
	exit $$rc
else
	$(BIN)/python -m pytest $(PYTEST_ARGS)
endif

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.relay_bench $(BENCH_ARGS)

# Minutes of load and faults on a private PostgreSQL and Redis, then checked (bench/README.md).
soak: $(VENV)/.installed-dev
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
