"""
cuda-python's runtime API, imported lazily: error unwrapping and device properties for TensorRT code.

Both the engine build (``engine_build.py``, for the cache key) and the TensorRT backend (device memory, streams)
need it; keeping it here lets neither import the other for it. Never imports torch.
"""

from __future__ import annotations


def cudart():
    """cuda-python's runtime module under its current (``cuda.bindings``) or pre-12.6 (``cuda.cudart``) name."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def check(result: tuple) -> object:
    """Unwrap a cuda-python ``(error, value…)`` tuple, raising on any error code."""
    runtime = cudart()
    error, *values = result
    if error != runtime.cudaError_t.cudaSuccess:
        raise RuntimeError(f'CUDA error {error.name}: {runtime.cudaGetErrorString(error)[1].decode()}')
    return values[0] if len(values) == 1 else tuple(values)


def cuda_device_properties(device: int = 0) -> tuple[str, int, int]:
    """(GPU name, compute capability major, minor) of a CUDA device."""
    props = check(cudart().cudaGetDeviceProperties(device))
    name = props.name.split(b'\0', 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return name, props.major, props.minor
