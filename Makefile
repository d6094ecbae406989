# medsr-caffe: one target per verb. `make setup` once, then `make test`.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(ROOT)/.venv/bin/python

.PHONY: help setup test check-venv nets data

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

setup:  ## Debian packages, Caffe (built once into ~/.cache/medsr-caffe), .venv
	@bash $(ROOT)/tools/setup/setup.sh

check-venv:
	@test -x $(PY) || { echo "make: .venv is missing: run 'make setup' first" >&2; exit 1; }

test: check-venv  ## the pytest suite (CPU, minutes)
	@cd $(ROOT) && $(PY) -m pytest

nets: check-venv  ## regenerate models/ and solvers/ from tools/config.py
	@cd $(ROOT) && GLOG_minloglevel=2 $(PY) -m tools.generate

data: check-venv  ## build the default data sets (brain, prostate, breast) into data/
	@cd $(ROOT) && $(PY) -m data_prep $(if $(DATASET),--dataset $(DATASET))
