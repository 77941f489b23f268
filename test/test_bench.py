"""
``mesc3d bench`` (mesc3d_training.bench.backends) on a tiny random model.

Every backend usable here is timed with the session-option variants, and the tables replace only their own blocks.
"""

from __future__ import annotations

import dataclasses

import pytest

from mesc3d_ros.config import save_config
from mesc3d_training.bench import backends
from mesc3d_training.reports.markdown_blocks import replace_block
from model_fixtures import tiny_config


def test_bench_times_every_backend_and_rewrites_only_its_section(tmp_path):
    cfg_path = save_config(tiny_config(), tmp_path / 'tiny.yaml')
    results, sessions = backends.benchmark(backends.random_weight_model(cfg_path), tmp_path / 'work', batches=(1, 3),
                                           iterations=2, warmup=1, calibration_data=str(tmp_path / 'no_data'),
                                           sessions=True)
    assert [(r.backend, r.batch) for r in results] == [
        ('torch eager (fp32)', 1), ('onnxruntime[CPUExecutionProvider] fp32', 1),
        ('torch eager (fp32)', 3), ('onnxruntime[CPUExecutionProvider] fp32', 3)]
    assert all(0 < r.p50_ms <= r.p95_ms and r.objects_per_s > 0 for r in results)
    assert [r.backend for r in sessions] == [f'fp32, {label}' for label in backends.SESSION_VARIANTS]
    slow = dataclasses.replace(results[1], mean_ms=100.0)
    assert slow.answered(5.0) == 1.0 and slow.answered(30.0) == pytest.approx(1 / 3)

    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# Benchmarks\n\nnode section by someone else\n')
    replace_block(doc, backends.BLOCK, backends.render_table(results, 'tiny', 'mesc3d bench', 0.5), backends.HEADING)
    text = doc.read_text()
    assert text.startswith('# Benchmarks\n\nnode section by someone else\n')
    assert '| onnxruntime[CPUExecutionProvider] fp32 | 3 |' in text and 'load average 0.5 before the run' in text
    replace_block(doc, backends.SESSION_BLOCK, backends.render_sessions(sessions, 'mesc3d bench'),
                  backends.SESSION_HEADING)
    assert '| fp32, 1 thread |' in doc.read_text() and '| fp32, defaults |' in doc.read_text()
