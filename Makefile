# mesc3d_ros — the two commands a newcomer needs are `make demo` and `make test`; both set up what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := build/stamps
APT_PACKAGES := sweethome3d-furniture morse-simulator-data cmake ninja-build g++ libegl1 libegl-mesa0 libgl1-mesa-dri

.PHONY: setup demo test test-fast bench clean help

help:
	@echo "make demo   - set up what is missing, run the node on the shipped model, print the table (demo_out/)"
	@echo "make test   - set up what is missing, run the whole test suite"
	@echo "make setup  - apt packages, .venv with pinned deps, vision_msgs interfaces, editable install"
	@echo "make bench  - benchmarks (long; results go to docs/benchmarks.md)"

setup: $(STAMP)/apt $(STAMP)/venv $(STAMP)/vision_msgs $(STAMP)/editable

# apt: only when a package is missing, so a ready machine does nothing (and needs no root).
$(STAMP)/apt:
	@mkdir -p $(STAMP)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: apt-get install $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@touch $@

$(STAMP)/venv: requirements.txt
	@mkdir -p $(STAMP)
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps pyrender==0.1.45
	$(PY) -m pip install -q --no-deps gymnasium-robotics==1.4.2  # kitchen meshes for the dataset, not the library
	@touch $@

# Our own vision_msgs subset, only when none is importable (a ROS install brings the real one).
$(STAMP)/vision_msgs: $(STAMP)/venv $(wildcard interfaces/vision_msgs/msg/*.msg) interfaces/vision_msgs/CMakeLists.txt
	@if $(PY) -c "import vision_msgs.msg" 2>/dev/null && [ ! -e build/vision_msgs ]; then \
	  echo "setup: using the installed vision_msgs"; \
	else \
	  bash scripts/build_interfaces.sh $(VENV) interfaces/vision_msgs build/vision_msgs; \
	fi
	@touch $@

$(STAMP)/editable: $(STAMP)/venv setup.py setup.cfg
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

demo: setup
	$(VENV)/bin/mesc3d demo

bench: setup
	$(VENV)/bin/mesc3d bench

clean:
	rm -rf build demo_out .pytest_cache
