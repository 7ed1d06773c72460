# chrony-nts: every entry point a user or CI needs. `make demo` and `make test` do their own set-up.
SHELL := /bin/bash
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/.venv/bin:$(PATH)
PY := $(CURDIR)/.venv/bin/python
LAB_NAME ?= chrony-nts-lab
LAB_CLIENTS ?= 4
PYTEST_ARGS ?=

.PHONY: setup lab-up lab-down lab-status demo health lint unit test bench clean

setup:                ## system packages, venv, lab images (idempotent)
	@bash lab/setup.sh

lab-up: setup         ## NTS servers + systemd client hosts in podman, inventory in inventories/lab/
	@$(PY) lab/labctl.py up --name $(LAB_NAME) --clients $(LAB_CLIENTS)

lab-down:             ## remove the lab: containers, network, keys, SSH masters
	@if [ -x $(PY) ]; then $(PY) lab/labctl.py down --name $(LAB_NAME); fi

lab-status:
	@$(PY) lab/labctl.py status --name $(LAB_NAME)

demo: lab-up          ## deploy NTS with site.yml on the lab, then show each host's NTS health
	ansible-playbook site.yml
	ansible-playbook playbooks/health.yml

health:               ## per-host NTS health of the current inventory
	ansible-playbook playbooks/health.yml

lint: setup           ## ruff and ansible-lint (production profile, offline)
	ruff check .
	ruff format --check .
	ansible-lint --offline --profile production

unit: setup
	pytest tests/unit -q $(PYTEST_ARGS)

test: lint            ## everything: lint, unit, loopback and lab integration, Molecule scenarios; ends with pytest's summary
	pytest tests $(PYTEST_ARGS)

bench: setup          ## benchmarks (each makes its own lab or loopback servers): printed figures beside baselines
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: lab-down
	rm -rf .venv .cache reports
