# The two commands of the README: `make demo` and `make test`. Both set the machine up first when needed:
# Debian packages (scripts/setup_system.sh), then a virtual environment at .venv with the project installed
# in editable mode, at the versions of constraints.txt. Stamps make a second run skip what is done.
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_STAMP := $(VENV)/.system-packages
INSTALL_STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

setup: $(INSTALL_STAMP)

$(SYSTEM_STAMP): scripts/setup_system.sh
	bash scripts/setup_system.sh
	mkdir -p $(VENV) && touch $@

# constraints.txt: the exact versions tested (pyproject.toml declares ranges); scripts/write_constraints.py writes it.
$(INSTALL_STAMP): pyproject.toml constraints.txt $(SYSTEM_STAMP)
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade "pip>=24" "setuptools>=77" wheel
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

demo: setup
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/specialize demo --out $(DEMO_DIR)

# Two pytest-xdist workers, a test module at a time each (tests/conftest.py groups them, longest first): most tests
# wait on a service or a subprocess part of the time, so two at once fill the machine's two cores.
TEST_WORKERS ?= 2
test: setup
	WANDB_MODE=offline $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: setup
	for bench in benchmarks/bench_*.py; do $(PY) -m benchmarks.$$(basename $$bench .py) || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
