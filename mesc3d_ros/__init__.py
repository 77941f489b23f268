"""
mesc3d_ros: single-image 3D reconstruction (MESC-3D) as a ROS 2 perception package.

This package is the runtime: message conversions, pre-processing, geometry, inference backends and the node.
It never imports torch; the PyTorch side lives in ``mesc3d_training`` (the repository's ``training/`` folder).
"""
