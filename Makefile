# Weir: the two commands a new user needs are `make up` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= dev
PYTHON ?= python3

.PHONY: up down status test e2e bench soak fuzz lint install clean

# `make up` needs only the mesh's own dependencies (a first run stays under a minute); tests, lint and the
# Pulumi program also need the `test` and `infra` extras. The install compiles the optional telemetry helpers
# (mesh/proxy/_speedups.pyx, in place): an edit to them is rebuilt by the next make.
$(VENV)/.runtime: pyproject.toml setup.py mesh/proxy/_speedups.pyx
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

# Fuzzing (docs/fuzzing.md): an atheris/libFuzzer campaign on one target, FUZZ_TARGET=codec (the proxy's HTTP/1.1
# codec) or yaml (the Istio YAML loader), for FUZZ_TIME seconds. New inputs go to FUZZ_WORK, the checked-in seeds
# in fuzz/corpus/<target> are only read; a crash or hang leaves its input in FUZZ_WORK and fails the target.
FUZZ_TARGET ?= codec
FUZZ_TIME ?= 300
FUZZ_WORK ?= .weir/fuzz/$(FUZZ_TARGET)
FUZZ_ARGS ?=

$(VENV)/.fuzz: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[fuzz]'
	touch $@

fuzz: $(VENV)/.fuzz  ## fuzz FUZZ_TARGET (codec|yaml) for FUZZ_TIME seconds (default 300)
	mkdir -p $(FUZZ_WORK)
	$(PY) fuzz/$(FUZZ_TARGET)_target.py $(FUZZ_WORK) fuzz/corpus/$(FUZZ_TARGET) \
	  $(addprefix -dict=,$(wildcard fuzz/$(FUZZ_TARGET).dict)) -max_total_time=$(FUZZ_TIME) -timeout=10 \
	  -print_final_stats=1 -artifact_prefix=$(FUZZ_WORK)/ $(FUZZ_ARGS)

lint: $(VENV)/.installed  ## ruff, then the playbooks: ansible-lint (production profile, offline) and --syntax-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ansible-lint --nocolor playbooks/
	for playbook in playbooks/*.yml; do \
	  $(VENV)/bin/ansible-playbook --syntax-check -i playbooks/inventories/local.yml $$playbook || exit 1; \
	done

clean: down
	rm -rf .weir build *.egg-info
