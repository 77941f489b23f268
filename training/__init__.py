"""mesc3d_training: the PyTorch side (model, data, losses/metrics, train, eval, export).

Installed from the repository's ``training/`` folder under this name. May import ``mesc3d_ros``; the reverse never
happens.
"""
