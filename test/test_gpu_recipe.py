"""The lent-GPU training recipe (scripts/pack_crops.py, gpu_train.py, gpu_compare.py) end to end on the CPU.

The shipped model was trained with these scripts on an H200; here they run on the tiny generated dataset for two
steps each, so a change to the loader, model, checkpoint or evaluation that breaks the recipe fails CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mesc3d_ros.config import save_config
from mesc3d_training.checkpoint import load_model
from mesc3d_training.train import train
from train_fixtures import make_tiny_dataset, tiny_config

REPO = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: object) -> None:
    result = subprocess.run([sys.executable, str(REPO / 'scripts' / name), *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f'{name} failed:\n{result.stdout}\n{result.stderr}'


@pytest.mark.slow
def test_pack_train_compare_make_a_deployable_model_and_a_table(tmp_path: Path):
    cfg = tiny_config(make_tiny_dataset(tmp_path / 'data'), epochs=1, prompt_epochs=1)
    config_path = save_config(cfg, tmp_path / 'tiny.yaml')
    base = tmp_path / 'base'
    train(cfg, base)   # the 3DSPL class table and prompts the recipe starts from
    pack = tmp_path / 'pack.npz'
    run_script('pack_crops.py', config_path, '--draws', 2, '--out', pack)
    with np.load(pack) as packed:
        rotations = packed['rotations']
        objects = packed['clouds'].shape[0]   # the training objects outside the held-out category
        assert objects >= 3 and len(rotations) == 2 * objects and set(packed['objects']) == set(range(objects))
        # canonical -> viewer: a rotation, or a rotation and the x mirror of a flipped crop
        assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-5)
        assert np.allclose(np.abs(np.linalg.det(rotations)), 1.0, atol=1e-5)
    gpu = tmp_path / 'gpu'
    for arch in ('mesc3d', 'psgn'):
        run_script('gpu_train.py', '--arch', arch, '--pack', pack, '--model', base / 'model.yaml', '--steps', 2,
                   '--batch-size', 2, '--out', gpu)
        report = json.loads((gpu / f'{arch}.json').read_text())
        assert report['steps'] == 2 and report['samples'] == 4 and np.isfinite(report['final_loss_mean_last_500'])
    run_script('gpu_compare.py', gpu, '--model', base / 'model.yaml', '--prompts', base / 'prompts.safetensors')
    table = (gpu / 'comparison.md').read_text()
    assert 'Both trained for 2 steps of batch 2' in table and '## `test`' in table and 'retrieval' in table
    shipped = load_model(gpu / 'mesc3d.yaml')
    assert shipped.prompts and shipped.metrics['test']['cd_l1'] > 0
    assert [e.name for e in shipped.classes] == [e.name for e in load_model(base / 'model.yaml').classes]
