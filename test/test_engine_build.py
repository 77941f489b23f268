"""
TensorRT engine cache: keys, names, profiles, atomic writes and the rebuild rules.

No GPU or TensorRT exists on the development machines, so the cache logic is driven here through a fake toolkit
(``FakeToolkit``: it stands in ONLY for the two TensorRT calls, platform query and build; files, hashes, contracts and
the cache decisions are all real). The same flow with real TensorRT — build, cache, reuse, rebuild on a mismatched
key and on an engine TensorRT refuses to deserialise — runs in the tests marked ``tensorrt``/``gpu`` at the end,
skipped where TensorRT or a GPU is missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from mesc3d_ros import engine_build
from mesc3d_ros.contract import ContractError, load_contract, write_atomic
from mesc3d_ros.engine_build import (EngineBuildError, EngineKey, Platform, ensure_engine, load_engine,
                                     profile_shapes, stale_reason)
from mesc3d_ros.tensorrt_backend import tensorrt_usable
import model_fixtures

# The session fixture shared with other test modules: pytest looks fixtures up by name in the module.
random_model_contract = model_fixtures.random_model_contract

TENSORRT_USABLE, TENSORRT_REASON = tensorrt_usable()
ORIN = Platform(tensorrt_version='10.3.0', gpu_name='Orin (nvgpu)', compute_capability='8.7', weakly_typed=True)
KEY = EngineKey(model_sha256='ab' * 32, tensorrt_version='10.3.0', gpu_name='NVIDIA GeForce RTX 4090',
                compute_capability='8.9', precision='fp16', max_batch=8, opt_batch=1)


class FakeToolkit:
    """Stands in for TensorRT (absent here): reports a platform and 'builds' bytes that name their inputs."""

    def __init__(self, platform: Platform):
        self.platform_info = platform
        self.builds: list[dict] = []

    def platform(self) -> Platform:
        return self.platform_info

    def build(self, onnx_path, shapes, precision, workspace_bytes, timing_cache):
        self.builds.append({'onnx': onnx_path.name, 'shapes': shapes, 'precision': precision,
                            'workspace': workspace_bytes, 'timing_cache': timing_cache})
        engine = f'engine:{onnx_path.name}:{precision}:{self.platform_info.tensorrt_version}'.encode()
        return engine, timing_cache + b'+timing'


@pytest.fixture
def model_copy(random_model_contract, tmp_path) -> Path:
    for path in random_model_contract.parent.glob('tiny.*'):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / 'tiny.json'


def test_cache_name_carries_model_tensorrt_gpu_precision_and_batch():
    assert KEY.file_name('small') == 'small.abababababab.trt10.3.0.nvidia-geforce-rtx-4090.sm89.fp16.b8.engine'
    assert dataclasses.replace(KEY, opt_batch=4).file_name('small').endswith('.fp16.b8o4.engine')
    variants = [dataclasses.replace(KEY, **{field: value}) for field, value in (
        ('model_sha256', 'cd' * 32), ('tensorrt_version', '10.7.0'), ('gpu_name', 'Orin'),
        ('compute_capability', '8.7'), ('precision', 'fp32'), ('max_batch', 4), ('opt_batch', 2))]
    names = {key.file_name('small') for key in variants + [KEY]}
    assert len(names) == len(variants) + 1, 'every key field must change the cache file name'


def test_key_mismatches_name_each_field():
    other = dataclasses.replace(KEY, tensorrt_version='10.7.0', gpu_name='Orin')
    assert KEY.mismatches(KEY) == []
    assert KEY.mismatches(other) == ["tensorrt_version: cached '10.7.0', needed '10.3.0'",
                                     "gpu_name: cached 'Orin', needed 'NVIDIA GeForce RTX 4090'"]


def test_profile_covers_batch_one_to_max(random_model_contract):
    contract = load_contract(random_model_contract)
    assert profile_shapes(contract, max_batch=8, opt_batch=2) == {
        'image': ((1, 3, 64, 64), (2, 3, 64, 64), (8, 3, 64, 64)),
        'class_embedding': ((1, 16), (2, 16), (8, 16))}
    for max_batch, opt_batch in ((0, 1), (4, 5), (4, 0)):
        with pytest.raises(ValueError, match='need 1 <= opt_batch <= max_batch'):
            profile_shapes(contract, max_batch=max_batch, opt_batch=opt_batch)


def test_stale_reason_explains_missing_unkeyed_and_mismatched_engines(tmp_path):
    engine = tmp_path / 'm.engine'
    assert stale_reason(engine, KEY).startswith('no cached engine at')
    engine.write_bytes(b'x')
    assert 'has no readable key file m.json' in stale_reason(engine, KEY)
    engine.with_suffix('.json').write_text(json.dumps(dataclasses.asdict(dataclasses.replace(KEY, max_batch=4))))
    assert stale_reason(engine, KEY).endswith('max_batch: cached 4, needed 8')
    engine.with_suffix('.json').write_text(json.dumps(dataclasses.asdict(KEY)))
    assert stale_reason(engine, KEY) is None


def test_build_then_reuse_then_rebuild_for_another_tensorrt(model_copy, tmp_path, caplog):
    contract = load_contract(model_copy)
    toolkit = FakeToolkit(ORIN)
    caplog.set_level(logging.INFO, logger='mesc3d_ros.engine_build')
    first = ensure_engine(contract, model_copy, toolkit, tmp_path / 'cache', max_batch=4)
    assert first.name == f'tiny.{contract.model_sha256[:12]}.trt10.3.0.orin-nvgpu.sm87.fp16.b4.engine'
    assert first.read_bytes() == b'engine:tiny.onnx:fp16:10.3.0'
    assert json.loads(first.with_suffix('.json').read_text())['model_sha256'] == contract.model_sha256
    assert toolkit.builds[0]['shapes']['image'] == ((1, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64))
    assert toolkit.builds[0]['workspace'] == engine_build.DEFAULT_WORKSPACE_MIB << 20
    assert 'because no cached engine at' in caplog.text

    assert ensure_engine(contract, model_copy, toolkit, tmp_path / 'cache', max_batch=4) == first
    assert len(toolkit.builds) == 1, 'a valid cached engine must be reused, not rebuilt'
    assert 'reusing cached TensorRT engine' in caplog.text

    toolkit.platform_info = dataclasses.replace(ORIN, tensorrt_version='10.7.0')
    second = ensure_engine(contract, model_copy, toolkit, tmp_path / 'cache', max_batch=4)
    assert second != first and '.trt10.7.0.' in second.name and len(toolkit.builds) == 2
    timing = sorted(p.name for p in (tmp_path / 'cache').glob('timing.*'))
    assert timing == ['timing.trt10.3.0.sm87.cache', 'timing.trt10.7.0.sm87.cache']

    toolkit.platform_info = ORIN          # back on 10.3: its timing cache is fed into the next (forced) build
    ensure_engine(contract, model_copy, toolkit, tmp_path / 'cache', max_batch=4, force_reason='--force given')
    assert toolkit.builds[-1]['timing_cache'] == b'+timing'
    assert not list((tmp_path / 'cache').glob('.*.tmp')), 'atomic writes leave no temporary files'


def test_explicit_engine_path_with_another_key_is_rebuilt(model_copy, tmp_path, caplog):
    contract = load_contract(model_copy)
    toolkit = FakeToolkit(ORIN)
    explicit = tmp_path / 'fixed_name.engine'
    ensure_engine(contract, model_copy, toolkit, tmp_path, max_batch=4, engine_path=explicit)
    caplog.set_level(logging.WARNING, logger='mesc3d_ros.engine_build')
    toolkit.platform_info = dataclasses.replace(ORIN, gpu_name='NVIDIA RTX A2000', compute_capability='8.6')
    assert ensure_engine(contract, model_copy, toolkit, tmp_path, max_batch=4, engine_path=explicit) == explicit
    assert len(toolkit.builds) == 2
    assert "was built for another model/platform: gpu_name: cached 'Orin (nvgpu)'" in caplog.text


def test_engine_refused_by_tensorrt_is_rebuilt_once(model_copy, tmp_path, caplog):
    contract = load_contract(model_copy)
    toolkit = FakeToolkit(ORIN)
    path = ensure_engine(contract, model_copy, toolkit, tmp_path, max_batch=2)
    path.write_bytes(b'engine from another TensorRT')     # as if copied in by hand, key file unchanged
    version_tag = ('IRuntime::deserializeCudaEngine: Serialization assertion stdVersionRead == serializationVersion '
                   'failed.Version tag does not match')

    def deserialize(blob: bytes):
        return (None, version_tag) if blob == b'engine from another TensorRT' else (blob.decode(), '')

    caplog.set_level(logging.WARNING, logger='mesc3d_ros.engine_build')
    engine, loaded_path = load_engine(contract, model_copy, toolkit, tmp_path, deserialize, max_batch=2)
    assert loaded_path == path and engine == 'engine:tiny.onnx:fp16:10.3.0' and len(toolkit.builds) == 2
    assert 'cannot deserialise' in caplog.text and 'Version tag does not match' in caplog.text

    def refuse_everything(blob: bytes):
        return None, 'corrupt'

    with pytest.raises(EngineBuildError, match='cannot deserialise the engine it just built: corrupt'):
        load_engine(contract, model_copy, toolkit, tmp_path, refuse_everything, max_batch=2)


def test_strongly_typed_tensorrt_builds_fp16_from_the_float16_onnx(model_copy, tmp_path):
    contract = load_contract(model_copy)
    toolkit = FakeToolkit(dataclasses.replace(ORIN, tensorrt_version='11.5.0', weakly_typed=False))
    fp16 = ensure_engine(contract, model_copy, toolkit, tmp_path, precision='fp16')
    assert toolkit.builds[-1]['onnx'] == 'tiny.fp16.onnx'
    assert contract.fp16_model_sha256[:12] in fp16.name
    ensure_engine(contract, model_copy, toolkit, tmp_path, precision='fp32')
    assert toolkit.builds[-1]['onnx'] == 'tiny.onnx'
    without_fp16 = dataclasses.replace(contract, fp16_model_file='', fp16_model_sha256='')
    with pytest.raises(EngineBuildError, match='builds FP16 only from a float16 ONNX'):
        ensure_engine(without_fp16, model_copy, toolkit, tmp_path, precision='fp16')


def test_a_tampered_onnx_is_refused_before_any_build(model_copy, tmp_path):
    contract = load_contract(model_copy)
    model_copy.with_suffix('.onnx').write_bytes(b'not the exported model')
    toolkit = FakeToolkit(ORIN)
    with pytest.raises(ContractError, match=r'tiny\.onnx: sha256 .* does not match field "model_sha256"'):
        ensure_engine(contract, model_copy, toolkit, tmp_path)
    assert toolkit.builds == []


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / 'model.engine'
    write_atomic(target, b'old engine')

    def failing_replace(self, other):
        raise OSError('disk full')

    monkeypatch.setattr(Path, 'replace', failing_replace)
    with pytest.raises(OSError, match='disk full'):
        write_atomic(target, b'new engine')
    assert target.read_bytes() == b'old engine'
    assert [p.name for p in tmp_path.iterdir()] == ['model.engine']


def test_engine_cli_needs_the_contract_and_tensorrt(model_copy, tmp_path):
    lonely = tmp_path / 'lonely.onnx'
    lonely.write_bytes(b'')
    with pytest.raises(ContractError, match='no model contract lonely.json next to it'):
        engine_build.main(['build', str(lonely)])
    if not TENSORRT_USABLE:
        with pytest.raises(EngineBuildError, match='engine build needs the TensorRT >= 10 Python module'):
            engine_build.main(['build', str(model_copy.with_suffix('.onnx'))])


def test_default_engine_dir_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    contract_path = tmp_path / 'share' / 'tiny.json'
    contract_path.parent.mkdir()
    assert engine_build.default_engine_dir(contract_path) == contract_path.parent
    monkeypatch.setattr(engine_build.os, 'access', lambda path, mode: False)   # a read-only install folder
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert engine_build.default_engine_dir(contract_path) == tmp_path / 'xdg' / 'mesc3d_ros' / 'engines'


# ---- real TensorRT (skipped where TensorRT or a CUDA GPU is missing) -------------------------------------------
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not TENSORRT_USABLE, reason=TENSORRT_REASON)
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_tensorrt_build_cache_reuse_and_rebuild(model_copy, tmp_path, caplog, precision):
    from mesc3d_ros.inference import create_backend
    from mesc3d_ros.tensorrt_backend import TensorRTBackend

    contract = load_contract(model_copy)
    reference = create_backend(model_copy, 'onnxruntime', max_batch=8)
    rng = np.random.default_rng(0)
    image = rng.random((5, 3, 64, 64), dtype=np.float32)
    embedding = contract.embedding_table()[[0, 1, 2, 0, 1]]
    expected = reference.run(image, embedding)
    tolerance = 1e-3 if precision == 'fp32' else 2e-2

    caplog.set_level(logging.INFO)
    backend = TensorRTBackend(contract, model_copy, max_batch=4, precision=precision, engine_dir=tmp_path / 'c')
    assert np.abs(backend.run(image, embedding) - expected).max() < tolerance      # 5 objects: 4 + 1
    assert 'building TensorRT engine' in caplog.text
    backend.close()
    engines = list((tmp_path / 'c').glob('*.engine'))
    assert len(engines) == 1

    caplog.clear()
    backend = TensorRTBackend(contract, model_copy, max_batch=4, precision=precision, engine_dir=tmp_path / 'c')
    assert 'reusing cached TensorRT engine' in caplog.text and 'building' not in caplog.text
    backend.close()

    key_file = engines[0].with_suffix('.json')
    key_file.write_text(json.dumps({**json.loads(key_file.read_text()), 'tensorrt_version': '0.0.0'}))
    caplog.clear()
    backend = TensorRTBackend(contract, model_copy, max_batch=4, precision=precision, engine_dir=tmp_path / 'c')
    assert "tensorrt_version: cached '0.0.0'" in caplog.text
    backend.close()

    engines[0].write_bytes(b'\0' * 4096)           # key file valid, bytes not an engine of this TensorRT
    caplog.clear()
    backend = TensorRTBackend(contract, model_copy, max_batch=4, precision=precision, engine_dir=tmp_path / 'c')
    assert 'cannot deserialise' in caplog.text
    assert np.abs(backend.run(image, embedding) - expected).max() < tolerance
    backend.close()
