# chrony-nts: every entry point a user or CI needs. `make demo` and `make test` do their own set-up.
SHELL := /bin/bash
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/.venv/bin:$(PATH)
PY := $(CURDIR)/.venv/bin/python
LAB_NAME ?= chrony-nts-lab
LAB_CLIENTS ?= 4
# Seconds `lab-up` waits for the hosts to accept SSH (empty: 90 s stretched by the machine's load).
LAB_SSH_WAIT ?=
# The inventory `demo` and `health` use: lab $(LAB_NAME)'s, as labctl.py writes it (INVENTORY=path for other hosts).
INVENTORY ?= $(shell python3 lab/labctl.py inventory --name $(LAB_NAME))
PYTEST_ARGS ?=

.PHONY: setup lab-up lab-down lab-status demo health lint unit test bench clean

setup:                ## system packages, venv, lab images (idempotent)
	@bash lab/setup.sh

lab-up: setup         ## NTS servers + systemd client hosts in podman; inventory: `python3 lab/labctl.py inventory`
	@$(PY) lab/labctl.py up --name $(LAB_NAME) --clients $(LAB_CLIENTS) $(if $(LAB_SSH_WAIT),--ssh-wait $(LAB_SSH_WAIT))

lab-down:             ## remove the lab: containers, network, keys, SSH masters
	@if [ -x $(PY) ]; then $(PY) lab/labctl.py down --name $(LAB_NAME); fi

lab-status:
	@$(PY) lab/labctl.py status --name $(LAB_NAME)

demo: lab-up          ## deploy NTS with site.yml on lab $(LAB_NAME), then show each host's NTS health
	ansible-playbook -i $(INVENTORY) site.yml
	ansible-playbook -i $(INVENTORY) playbooks/health.yml

health:               ## per-host NTS health of lab $(LAB_NAME) (or INVENTORY=path)
	ansible-playbook -i $(INVENTORY) playbooks/health.yml

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

.PHONY: images-all test-releases

images-all: setup     ## lab images of every Debian release (12, 13, testing); `setup` builds only the default (12)
	@$(PY) lab/labctl.py image --release all

test-releases: setup  ## Debian 12/13/testing clients x chrony/NTPsec servers of the three releases, in a lab of its own
	pytest tests/lab/test_releases.py -v $(PYTEST_ARGS)
