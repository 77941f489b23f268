#!/bin/bash
# register_editable.sh VENV: make an editable install (`pip install -e .`, `make setup`) visible to ROS tools.
# pip registers neither the ament index marker nor share/mesc3d_ros nor lib/mesc3d_ros/<executable>, so
# `ros2 launch mesc3d_ros ...` would say "package 'mesc3d_ros' not found". This links them into the venv prefix,
# pointing at the checkout (edits apply without reinstalling); use with AMENT_PREFIX_PATH=VENV.
set -euo pipefail
VENV=$(realpath "$1"); REPO=$(cd "$(dirname "$0")/.." && pwd); PKG=mesc3d_ros
mkdir -p "$VENV/share/ament_index/resource_index/packages" "$VENV/share/$PKG" "$VENV/lib/$PKG"
ln -sfn "$REPO/resource/$PKG" "$VENV/share/ament_index/resource_index/packages/$PKG"
for item in package.xml config models; do ln -sfn "$REPO/$item" "$VENV/share/$PKG/$item"; done
# ros2 launch finds launch files by walking the share folder, which does not enter symlinked folders: link files.
rm -rf "$VENV/share/$PKG/launch" && mkdir -p "$VENV/share/$PKG/launch"
for file in "$REPO"/launch/*.launch.py; do ln -sfn "$file" "$VENV/share/$PKG/launch/"; done
for exe in reconstruct_node box_cloud_node reconstruct_image; do
  [ -x "$VENV/bin/$exe" ] || { echo "register_editable: $VENV/bin/$exe missing (pip install -e . first)" >&2; exit 1; }
  ln -sfn "$VENV/bin/$exe" "$VENV/lib/$PKG/$exe"
done
echo "registered $PKG (editable, $REPO) in the ament index of $VENV"
