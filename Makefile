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
# Extra options for `make catalog-health` and `make catalog-import` (e.g. --timeout 3, --diff, --out FILE).
CATALOG_ARGS ?=

.PHONY: setup lab-up lab-down lab-status demo health lint unit test bench bench-releases clean
.PHONY: role-docs changelog sanity collection ee-context
.PHONY: catalog-health catalog-import

setup:                ## system packages, venv, lab images, the collection path (idempotent)
	@mkdir -p .collections/ansible_collections/nts && ln -sfn ../../.. .collections/ansible_collections/nts/chrony
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

lint: setup           ## ruff, ansible-lint (production profile, offline), role READMEs, changelog fragments
	ruff check .
	ruff format --check .
	ansible-lint --offline --profile production
	python3 tools/role_docs.py --check
	antsibull-changelog lint
	antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml

unit: setup
	pytest tests/unit -q $(PYTEST_ARGS)

test: lint            ## everything: lint, unit, loopback and lab integration, Molecule scenarios; ends with pytest's summary
	pytest tests $(PYTEST_ARGS)

bench: setup          ## benchmarks (each makes its own lab or loopback servers): printed figures beside baselines
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

bench-releases: images-all  ## converge per Debian release (12, 13, testing): a lab of each, first and second run
	$(PY) benchmarks/bench_converge.py --release 12,13,testing

clean: lab-down
	rm -rf .venv .cache reports

role-docs:            ## regenerate the variable sections of the role READMEs from meta/argument_specs.yml
	python3 tools/role_docs.py --write

changelog: setup      ## fold changelogs/fragments into changelogs/changelog.yaml and CHANGELOG.rst (galaxy.yml's version)
	antsibull-changelog release --reload-plugins --update-existing --refresh-fragments
	antsibull-changelog generate

sanity: setup         ## ansible-test sanity on the built and installed collection (tools/sanity.sh; PyPI for its venvs)
	bash tools/sanity.sh

collection: setup     ## build the collection tarball into .cache/collection
	ansible-galaxy collection build --force --output-path .cache/collection .

catalog-health:       ## probe every catalog server (public, from this machine), report in reports/catalog-health
	bin/nts-catalog refresh --out reports/catalog-health $(CATALOG_ARGS)

catalog-import:       ## diff the community list LIST=nts-sources.yml against the catalog (CATALOG_ARGS="--out F" writes F)
	@test -n "$(LIST)" || { echo "usage: make catalog-import LIST=path/to/nts-sources.yml [CATALOG_ARGS=--diff]"; exit 3; }
	bin/nts-catalog import $(LIST) $(CATALOG_ARGS)

ee-context: setup     ## execution environment build context in .cache/ee/context (ansible-builder create; no image)
	@mkdir -p .cache/ee
	ansible-galaxy collection build --force --output-path .cache/ee .
	mv -f .cache/ee/nts-chrony-$$(sed -n 's/^version: *//p' galaxy.yml).tar.gz .cache/ee/nts-chrony.tar.gz
	ansible-builder create --file execution-environment.yml --context .cache/ee/context

.PHONY: images-all test-releases

images-all: setup     ## lab images of every Debian release (12, 13, testing); `setup` builds only the default (12)
	@$(PY) lab/labctl.py image --release all

test-releases: setup  ## Debian 12/13/testing clients x chrony/NTPsec servers of the three releases, in a lab of its own
	pytest tests/lab/test_releases.py -v $(PYTEST_ARGS)
