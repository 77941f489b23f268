#!/bin/bash
# install_ros_tools.sh VENV SRC BUILD: install the upstream ROS 2 Jazzy tools that PyPI lacks (launch, launch_ros,
# launch_xml, launch_yaml, ros2cli, ros2pkg, ros2launch, sensor_msgs_py, composition_interfaces) from the tarballs in
# SRC (../shared/ros2-jazzy-src), plus colcon from PyPI, into VENV. Used by `make test` so the suite can run what a
# ROS user runs (`colcon build`, `ros2 launch`); a machine without SRC skips those tests instead.
set -euo pipefail
VENV=$(realpath "$1"); SRC=$(realpath "$2"); BUILD=$3
HERE=$(cd "$(dirname "$0")" && pwd)
(cd "$SRC" && sha256sum --quiet -c SHA256SUMS)
rm -rf "$BUILD" && mkdir -p "$BUILD"
for tarball in "$SRC"/*.tar.gz; do tar -xzf "$tarball" -C "$BUILD"; done
# Pure-Python packages: --no-deps so pip never swaps what the venv holds (their deps are ROS wheels already there).
PURE=()
for pkg in launch launch_xml launch_yaml launch_ros ros2cli ros2pkg ros2launch sensor_msgs_py; do
  PURE+=("$(dirname "$(find "$BUILD" -path "*/$pkg/setup.py" -not -path '*/test/*' | head -1)")")
done
# The old setup.py files make setuptools print pages of deprecation warnings: keep them in a log, show it on failure.
pip_install() { "$VENV/bin/pip" install -q --no-deps "$@" >> "$BUILD/pip.log" 2>&1 || { tail -40 "$BUILD/pip.log"; exit 1; }; }
pip_install --no-build-isolation "${PURE[@]}"
pip_install osrf-pycommon==2.0.2 argcomplete==3.6.3
# colcon with --no-deps: its declared deps would downgrade setuptools (ros2-jazzy-src/README.md lists this set).
pip_install colcon-core==0.21.3 colcon-ros==0.5.0 colcon-python-setup-py==0.2.9 \
  colcon-bash==0.5.0 colcon-library-path==0.2.1 colcon-recursive-crawl==0.2.3 colcon-package-selection==0.2.10 \
  colcon-parallel-executor==0.4.0 colcon-output==0.2.15 colcon-pkg-config==0.1.0 colcon-cmake==0.2.30 \
  colcon-test-result==0.3.8 distlib==0.4.4
# launch_ros imports composition_interfaces (services only): build it with rosidl like our vision_msgs.
bash "$HERE/build_interfaces.sh" "$VENV" "$BUILD/composition_interfaces/composition_interfaces" \
  "$BUILD/composition_interfaces_build"
"$VENV/bin/python" -c "import launch_ros.actions, sensor_msgs_py.point_cloud2, ros2cli; print('ROS tools installed')"
