"""
Reliability runs of the live node (benchmarks, not tests): soak, fuzz and the mixed attack campaign.

``python -m mesc3d_training.reliability soak|fuzz`` (``__main__``) and ``python -m mesc3d_training.reliability.attack``;
``run`` holds what every run shares (the model, the node process, a known-good frame, the common options).
"""
