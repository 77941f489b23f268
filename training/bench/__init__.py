"""
Benchmarks (measurements for docs/benchmarks.md and models/README.md, not tests).

``backends``: ``mesc3d bench``, every inference backend on this machine; ``node``: end-to-end latency of the live
node; ``quantization``: the per-block INT8 sensitivity table.
"""
