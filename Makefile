PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-requests clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# On a new data directory the quick start's sample (examples/quickstart) is put in: the directory file when there is
# none, and its rules, destinations and integration when the database holds no configuration yet.
run: $(STAMP)
	DATA=$${CRMROUTE_DATA_DIR:-./data}; mkdir -p "$$DATA" && \
	  { test -e "$$DATA/directory.csv" || cp examples/quickstart/directory.csv "$$DATA/directory.csv"; }
	CRMROUTE_DATA_DIR=$${CRMROUTE_DATA_DIR:-./data} $(BIN)/crmroute db upgrade
	CRMROUTE_DATA_DIR=$${CRMROUTE_DATA_DIR:-./data} $(BIN)/crmroute rules import --if-empty examples/quickstart/rules.yaml
	CRMROUTE_DATA_DIR=$${CRMROUTE_DATA_DIR:-./data} $(BIN)/crmroute serve

# pytest-xdist workers. Most tests wait (on timeouts, servers, subprocesses) more than they compute,
# so two per core; idle workers take tests from busy ones. Serially: make test PYTEST_WORKERS=0
PYTEST_WORKERS ?= 4

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Requests each CRM connector sends per uncached call and per CLI dry run, against the vendor fakes.
bench-requests: $(STAMP)
	$(BIN)/python bench/requests.py

clean:
	rm -rf $(VENV) data .pytest_cache
