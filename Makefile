# Weir: the two commands a new user needs are `make up` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= dev
PYTHON ?= python3

.PHONY: up down status test e2e bench soak fuzz lint install clean

# `make up` needs only the mesh's own dependencies (a first run stays under a minute); tests, lint and the
# Pulumi program also need the `test` and `infra` extras.
$(VENV)/.runtime: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install -q -e '.[test,infra]'
	touch $@

install: $(VENV)/.installed

up: $(VENV)/.runtime  ## start the whole mesh locally (control plane, ingress, bookinfo-lite with sidecars)
	$(VENV)/bin/meshctl up --stack $(STACK)

down:  ## stop everything `make up` started
	@if [ -x $(VENV)/bin/meshctl ]; then $(VENV)/bin/meshctl down --stack $(STACK); fi

status: $(VENV)/.runtime
	$(VENV)/bin/meshctl status --stack $(STACK)

test: $(VENV)/.installed  ## unit, simulation and end-to-end tests
	$(PY) -m pytest -q

e2e: $(VENV)/.installed
	$(PY) -m pytest -q tests/e2e

bench: $(VENV)/.installed  ## throughput/latency/CPU/RSS against nginx (installs wrk and nginx when missing)
	$(PY) -m bench.run $(BENCH_ARGS)  # BENCH_ARGS="--quick" or "--profile"

soak: $(VENV)/.installed  ## 10 min at 1000 rps through the running stack's ingress (starts it when needed); not in CI
	$(VENV)/bin/meshctl up --stack $(STACK)
	$(PY) -m bench.soak --stack $(STACK) $(SOAK_ARGS)  # SOAK_ARGS="--rate 200 --path /gateway/books --duration 600"

lint: $(VENV)/.installed  ## ruff, then the playbooks: ansible-lint (production profile, offline) and --syntax-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ansible-lint --nocolor playbooks/
	for playbook in playbooks/*.yml; do \
	  $(VENV)/bin/ansible-playbook --syntax-check -i playbooks/inventories/local.yml $$playbook || exit 1; \
	done

clean: down
	rm -rf .weir build *.egg-info
