# xmppauth: `make run` starts the embedded server, `make test` runs the whole suite, `make fuzz` the long fuzz run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PostgreSQL + Redis leg of `make test` runs when this database answers (CI requires it).
TEST_PG_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
PYTEST_ARGS ?=

.PHONY: install install-python install-js run test test-sqlite test-postgres lint fuzz fuzz-hypothesis fuzz-atheris

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# Strophe.js, ws and @xmldom/xmldom for the WebSocket and BOSH end-to-end tests (versions in package-lock.json).
tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund
	touch $@

# `run` needs Python only; Node.js (npm) is needed by the test targets alone (tests/test_makefile.py checks it).
install-python: $(VENV)/.installed

install-js: tests/js/node_modules/.installed

install: install-python install-js

run: install-python
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap
	$(PY) manage.py runxmpp

# The Redis databases tests use of their own (beside TEST_REDIS_URL): a set per leg, as `make test` runs the
# legs side by side (a Celery worker of one would take the other's tasks; routers would meet the other's users).
# Their listening ports too (tests/processes.py free_port): a range per leg, below the kernel's ephemeral ports,
# so the other leg's servers and anyone's outgoing connections never take a port handed out to this one.
# And their Prometheus counters (xmppauth.metrics): a directory per leg, emptied when the leg starts, so that one
# leg's logins never show in the other's /metrics (the counters' tests compare before and after).
SQLITE_LEG_METRICS := $(CURDIR)/var/test-metrics-sqlite
POSTGRES_LEG_METRICS := $(CURDIR)/var/test-metrics-postgres
SQLITE_LEG_REDIS := XMPPAUTH_TEST_REDIS_URL=redis://127.0.0.1:6379/13 \
	XMPPAUTH_TEST_CELERY_REDIS_URL=redis://127.0.0.1:6379/14 XMPPAUTH_TEST_PORTS=12000-21999 \
	PROMETHEUS_MULTIPROC_DIR=$(SQLITE_LEG_METRICS)
POSTGRES_LEG_REDIS := XMPPAUTH_TEST_REDIS_URL=redis://127.0.0.1:6379/11 \
	XMPPAUTH_TEST_CELERY_REDIS_URL=redis://127.0.0.1:6379/10 XMPPAUTH_TEST_PORTS=22000-31999 \
	PROMETHEUS_MULTIPROC_DIR=$(POSTGRES_LEG_METRICS)
# Each leg keeps about 0.6 of one core busy (the rest is waiting for servers, clients and timers), so on two
# cores the two legs run at once; each leg's output is printed whole when it ends. TEST_JOBS=1: one by one.
TEST_JOBS ?= 2

# Both legs: SQLite + in-memory channel layer, and PostgreSQL + Redis.
test: install
	$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target test-sqlite test-postgres

test-sqlite: install
	@echo "== SQLite leg"
	rm -rf $(SQLITE_LEG_METRICS)
	env -u DATABASE_URL -u REDIS_URL $(SQLITE_LEG_REDIS) $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-postgres: install
	@if $(PY) -c "import psycopg,sys; psycopg.connect('$(TEST_PG_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		echo "== PostgreSQL + Redis leg"; \
		rm -rf $(POSTGRES_LEG_METRICS); \
		DATABASE_URL=$(TEST_PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(POSTGRES_LEG_REDIS) \
			$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS); \
	elif [ -n "$$XMPPAUTH_REQUIRE_POSTGRES" ]; then \
		echo "PostgreSQL at $(TEST_PG_URL) is required but not reachable"; exit 1; \
	else \
		echo "== PostgreSQL leg skipped: $(TEST_PG_URL) not reachable"; \
	fi

lint: install-python
	$(VENV)/bin/ruff check .

# Nightly-style fuzzing (issue 16 §5): every hypothesis target with 100,000 inputs (profile `nightly`, tests/fuzz),
# then every atheris (libFuzzer, coverage-guided) target for FUZZ_RUNS inputs. `make test` runs the short
# hypothesis profile (`ci`). Crashers: var/fuzz/<target>-crash-*, to be kept as tests/fuzz regression examples.
# Here (2 shared cores, December 2026): fuzz-atheris about 16 min; fuzz-hypothesis ran 2,000 inputs per test
# in 396 s, so its 100,000 take hours: run it nightly, or with a smaller FUZZ_RUNS.
FUZZ_RUNS ?= 100000
FUZZ_TARGETS ?= xml stream sasl certfacts bosh

fuzz: fuzz-atheris fuzz-hypothesis

fuzz-hypothesis: install-python
	env -u DATABASE_URL -u REDIS_URL HYPOTHESIS_PROFILE=nightly FUZZ_RUNS=$(FUZZ_RUNS) $(PY) -m pytest -q -p no:cacheprovider \
		--hypothesis-show-statistics tests/fuzz $(PYTEST_ARGS)

fuzz-atheris: install-python
	for target in $(FUZZ_TARGETS); do \
		env -u DATABASE_URL -u REDIS_URL $(PY) -m tests.fuzz.atheris_targets $$target -runs=$(FUZZ_RUNS) \
			-print_final_stats=1 || exit 1; \
	done
