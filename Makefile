# The two commands of the README, and the pieces they are made of.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_TREE ?= var/sample-tree
DEMO_DIRECTORIES ?= 1000
DEMO_FILES ?= 10000

.PHONY: demo test lint venv venv-dev services clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# The compiled listing (enumeration/connectors/_scan.c). Without a C compiler Census runs its
# pure-Python twin, slower: `manage.py check` says so. Marked done only once built, so a machine
# that gets a compiler later builds it at the next `make`.
$(VENV)/.compiled: enumeration/connectors/_scan.c setup.py | $(VENV)/.runtime
	if $(BIN)/python setup.py -q build_ext --inplace; then touch $@; else \
		echo "census: the compiled listing was not built; the pure-Python listing will run" >&2; fi

# Census's own bytecode, written ahead: where PYTHONDONTWRITEBYTECODE is set (this machine, the
# Dockerfile) no process writes it, and every worker start compiled every module again, about
# 0.1 s of a 0.7 s start. Only what changed is compiled again; a stale file is never used.
BYTECODE = $(BIN)/python -m compileall -q -j 0 config enumeration nms discovery benchmarks

venv: $(VENV)/.runtime $(VENV)/.compiled
	@$(BYTECODE)
venv-dev: $(VENV)/.dev $(VENV)/.compiled
	@$(BYTECODE)

# The main job on the embedded default: SQLite and an in-process worker, nothing else needed.
demo: venv
	env -u DATABASE_URL -u CELERY_BROKER_URL LOG_LEVEL=WARNING $(BIN)/python manage.py migrate --no-input -v 0
	@test -d $(DEMO_TREE) || env -u DATABASE_URL -u CELERY_BROKER_URL $(BIN)/python manage.py \
		sample_tree $(DEMO_TREE) --directories $(DEMO_DIRECTORIES) --files $(DEMO_FILES)
	env -u DATABASE_URL -u CELERY_BROKER_URL LOG_LEVEL=WARNING $(BIN)/python manage.py enumerate $(DEMO_TREE) --wait
	env -u DATABASE_URL -u CELERY_BROKER_URL $(BIN)/python manage.py sessions --limit 5

clean-demo:
	chmod -R u+rwx $(DEMO_TREE) 2>/dev/null || true
	rm -rf $(DEMO_TREE) var/census.sqlite3*

# PostgreSQL and Redis up (started when down), then lint and the whole suite.
services:
	bash .ci/services

# ruff, missing migrations, and an OpenAPI schema that validates without a warning.
lint: venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run -v 0
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null

test: venv-dev services lint
	$(BIN)/pytest
