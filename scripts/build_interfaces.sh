#!/bin/bash
# build_interfaces.sh VENV SRC BUILD: build a ROS 2 Jazzy interface package (ament_cmake + rosidl) into VENV using
# only the pip wheels and the system cmake/ninja/gcc. Used by `make setup` for interfaces/vision_msgs when no
# vision_msgs is importable (a real ROS install provides its own and this script is not run), and by
# scripts/install_ros_tools.sh for composition_interfaces (services only).
set -euo pipefail
VENV=$(realpath "$1"); SRC=$(realpath "$2"); BUILD=$3; PKG=$(basename "$SRC")
mkdir -p "$(dirname "$BUILD")"
# The wheels' exported CMake files hard-code the wheel builder's Python and numpy include dirs; point them at ours.
# Needed again after every pip install of another message wheel, so it runs on every build.
PYINC=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
PYTAG=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
PYVER=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
{ grep -rl "/opt/python/$PYTAG-$PYTAG/" "$VENV/share" --include='*.cmake' || true; } | xargs -r sed -i \
  -e "s#/opt/python/$PYTAG-$PYTAG/include/python$PYVER#$PYINC#g" \
  -e "s#/opt/python/$PYTAG-$PYTAG/lib/python$PYVER/site-packages/numpy/_core/include#$NPINC#g"
# AMENT_PREFIX_PATH must name the venv during configure and build, else "No 'rosidl_typesupport_c' found".
# BUILD_TESTING=OFF because ament_lint_auto is not on PyPI.
export AMENT_PREFIX_PATH="$VENV"
# The wheels' bootstrapper re-execs Python with LD_LIBRARY_PATH set; a stale guard from a parent breaks that.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF > "$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" > "$BUILD.build.log" 2>&1 || { tail -50 "$BUILD.build.log"; exit 1; }
cmake --install "$BUILD" > /dev/null
# Import what the package defines (a package may have only services or only actions, and no msg/).
KINDS=$(for kind in msg srv action; do if [ -d "$SRC/$kind" ]; then echo -n "'$PKG.$kind',"; fi; done)
"$VENV/bin/python" -c "import importlib; [importlib.import_module(m) for m in ($KINDS)]; print('built $PKG into $VENV')"
