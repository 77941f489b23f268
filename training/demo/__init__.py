"""
The demo, ``mesc3d demo``: the shipped model in the real node, fed a live stream of unseen objects, then scored.

``run`` is the command; ``processes`` starts the node and the publisher as child processes; ``model`` exports the
checkpoint when needed; ``scenes`` renders test objects on a table; ``publisher`` plays them as an RGB-D camera with
detections (its own process, no torch); ``recorder`` bags every topic; ``report`` scores the clouds against ground
truth and ``figures`` draws them. The reliability runs (``mesc3d_training.reliability``) reuse these pieces.
"""
