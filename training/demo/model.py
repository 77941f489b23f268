"""
The model a live-node run loads: an exported contract, exported from the checkpoint only when its bytes changed.

A checkpoint shipped in ``models/`` runs from its deployable form beside it (``mesc3d ship``: float32 and INT8, what
the node loads by default) while that form was made from these bytes. Any other checkpoint is exported to
``engines/``; ``engines/<name>.source.json`` records which checkpoint bytes an export came from, so it is exported
once and reused until the weights or their metadata change. Torch is imported only when an export is needed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from mesc3d_ros.contract import ContractError, file_sha256, load_contract, verify_model_file
from mesc3d_training.demo.processes import DemoError

LOGGER = logging.getLogger(__name__)


def ensure_exported(model: Path, engines_dir: Path) -> Path:
    """Return the contract JSON to run: ``model`` itself if it is one, else a fresh export of the checkpoint."""
    if model.suffix == '.json':
        try:
            verify_model_file(load_contract(model), model)
        except ContractError as exc:
            raise DemoError(f'model contract unusable: {exc}') from exc
        return model
    stem = model.with_suffix('') if model.suffix in ('.safetensors', '.yaml') else model
    weights, meta = stem.with_suffix('.safetensors'), stem.with_suffix('.yaml')
    missing = [str(path) for path in (weights, meta) if not path.is_file()]
    if missing:
        raise DemoError(f'model checkpoint missing: {", ".join(missing)}. The shipped model is trained with '
                        f'`mesc3d train config/mesc3d_mobile.yaml` (models/README.md); or pass --model with a '
                        f'contract JSON written by `mesc3d export`.')
    source = {'checkpoint': str(stem), 'weights_sha256': file_sha256(weights), 'meta_sha256': file_sha256(meta)}
    # A shipped model's deployable form (mesc3d ship: float32 + INT8) is what the node loads by default: run that.
    if _export_is_current(stem.with_suffix('.json'), stem.with_name(f'{stem.name}.source.json'), source):
        LOGGER.info('using %s (the deployable form shipped beside these checkpoint bytes)', stem.with_suffix('.json'))
        return stem.with_suffix('.json')
    name = yaml.safe_load(meta.read_text())['config']['model']['name']
    contract_path = engines_dir / f'{name}.json'
    source_path = engines_dir / f'{name}.source.json'
    if _export_is_current(contract_path, source_path, source):
        LOGGER.info('using %s (exported from these checkpoint bytes)', contract_path)
        return contract_path
    LOGGER.info('exporting %s to %s (no export of these weights yet)', weights, engines_dir)
    from mesc3d_training.checkpoint import load_model  # torch: only when an export is needed
    from mesc3d_training.export import export_model

    for chatty in ('onnxscript', 'onnx_ir'):  # one INFO line per folded constant otherwise (as `mesc3d export`)
        logging.getLogger(chatty).setLevel(logging.WARNING)
    contract_path = export_model(load_model(weights), engines_dir)
    source_path.write_text(json.dumps(source, indent=1))
    return contract_path


def _export_is_current(contract_path: Path, source_path: Path, source: dict) -> bool:
    if not (contract_path.is_file() and source_path.is_file()):
        return False
    try:
        verify_model_file(load_contract(contract_path), contract_path)
        recorded = json.loads(source_path.read_text())
    except (ContractError, ValueError) as exc:
        LOGGER.info('re-exporting: %s', exc)
        return False
    return all(recorded.get(key) == source[key] for key in ('weights_sha256', 'meta_sha256'))
