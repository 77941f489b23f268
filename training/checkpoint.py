"""
The deployable model checkpoint: ``<stem>.safetensors`` (weights) + ``<stem>.yaml`` (everything else).

This is the format of the shipped model in ``models/``, of a training run's ``best`` and ``model`` files and the
input of ``mesc3d export``. Its weights file is the project's one weights format (:func:`weights_bytes`): the
resumable training checkpoints (``train_checkpoint.py``) write theirs with the same function. It holds the inference
module's state dict plus, optionally, the trained 3DSPL prompts (``text_prior.PromptParameters``, stored under the
``prompts.`` prefix; they let ``mesc3d export --extra-classes`` embed new class names exactly as the table was
embedded). No optimizer state: resumable training checkpoints belong to the training code. Nothing is unpickled on
load. The YAML side carries what is needed to rebuild and use the model:

- ``config``: the resolved :class:`~mesc3d_ros.config.Config` (``config_to_dict``),
- ``classes`` / ``generic_class``: the class table (name, text-prior embedding, metric size prior),
- ``data_manifest_hash``: which dataset it was trained on, ``metrics``: its evaluation numbers,
- ``weights_sha256``: sha256 of the ``.safetensors`` bytes, checked before the weights are parsed.

Both files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint under
the final name. Every problem on load is a :class:`CheckpointError` naming the file and the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from mesc3d_ros.config import Config, ConfigError, config_from_dict, config_hash, config_to_dict
from mesc3d_ros.contract import ClassEntry, ContractError, class_entry_to_dict, parse_class_entry, write_atomic
from mesc3d_training.model import build_model

WEIGHTS_SUFFIX = '.safetensors'
PROMPTS_PREFIX = 'prompts.'
"""Key prefix of the 3DSPL prompt tensors inside the safetensors file (the model's own keys have no prefix)."""
META_SUFFIX = '.yaml'
META_KEYS = ('config', 'classes', 'generic_class', 'data_manifest_hash', 'metrics', 'weights_sha256')


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, tampered or does not fit its config; the message names file and key."""


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module
    """The inference module in eval mode, float32, on the CPU."""
    cfg: Config
    classes: tuple[ClassEntry, ...]
    generic_class: ClassEntry
    data_manifest_hash: str
    metrics: dict
    prompts: dict[str, torch.Tensor]
    """State dict of the trained ``text_prior.PromptParameters`` (float32); empty when none was saved."""


def checkpoint_stem(path: str | Path) -> Path:
    """``models/small``, ``models/small.yaml`` and ``models/small.safetensors`` all name the same checkpoint."""
    path = Path(path)
    return path.with_suffix('') if path.suffix in (WEIGHTS_SUFFIX, META_SUFFIX) else path


def save_model(stem: Path, model: nn.Module, cfg: Config, classes: tuple[ClassEntry, ...],
               generic_class: ClassEntry, data_manifest_hash: str, metrics: dict, fp16: bool = False,
               prompts: Mapping[str, torch.Tensor] | None = None) -> Path:
    """
    Write ``<stem>.safetensors`` and ``<stem>.yaml`` atomically; returns the YAML path.

    ``fp16`` stores floating-point tensors as float16 (halves the shipped file); they are widened back to float32
    on load, so the model always runs in float32. ``prompts``: the state dict of the trained
    ``TextPrior.prompts``, if any (what ``load_model`` returns as ``LoadedModel.prompts``).
    """
    stem = checkpoint_stem(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if not classes:
        raise ValueError(f'{stem}: a deployable checkpoint needs a non-empty class table')
    for entry in (*classes, generic_class):
        if len(entry.embedding) != cfg.model.text_dim:
            raise ValueError(f'{stem}: class "{entry.name}" has a {len(entry.embedding)}-d embedding, '
                             f'model.text_dim is {cfg.model.text_dim}')
    state = dict(model.state_dict())
    if prompts is not None:
        state.update({PROMPTS_PREFIX + key: value for key, value in prompts.items()})
    blob = weights_bytes(state, cfg, fp16)
    meta = {
        'config': config_to_dict(cfg),
        'classes': [class_entry_to_dict(entry) for entry in classes],
        'generic_class': class_entry_to_dict(generic_class),
        'data_manifest_hash': data_manifest_hash,
        'metrics': metrics,
        'weights_sha256': hashlib.sha256(blob).hexdigest(),
    }
    try:
        meta_text = yaml.safe_dump(meta, sort_keys=False)
    except yaml.representer.RepresenterError as exc:
        raise ValueError(f'{stem}: metrics must hold plain numbers/strings/lists/dicts: {exc}') from exc
    write_atomic(stem.with_suffix(WEIGHTS_SUFFIX), blob)
    return write_atomic(stem.with_suffix(META_SUFFIX), meta_text.encode())


def weights_bytes(state: Mapping[str, torch.Tensor], cfg: Config, fp16: bool = False) -> bytes:
    """
    Serialise ``state`` in the one weights format.

    Safetensors of CPU copies, tagged with the config hash (the caller records the bytes' sha256 beside them).
    ``fp16`` stores floating-point tensors as float16.
    """
    # Copies, so tensors that share storage (safetensors refuses those) and non-contiguous views both serialise.
    tensors = {key: (value.detach().to('cpu', torch.float16 if fp16 and value.is_floating_point() else None,
                                       copy=True).contiguous())
               for key, value in state.items()}
    return save_safetensors_bytes(tensors, metadata={'config_hash': config_hash(cfg)})


def load_weights(path: str | Path, model: nn.Module) -> dict:
    """
    Load a checkpoint's verified weights into ``model``; return the checkpoint's metrics.

    ``model`` is any module with the saved state dict: the MESC-3D of its config, or a baseline trained by the same
    loop.
    """
    stem = checkpoint_stem(path)
    meta_path, weights_path = stem.with_suffix(META_SUFFIX), stem.with_suffix(WEIGHTS_SUFFIX)
    meta = _read_meta(meta_path)
    tensors = read_verified_safetensors(weights_path, _typed(meta, 'weights_sha256', str, meta_path), meta_path,
                                        CheckpointError)
    model.load_state_dict(_match_state_dict(model, {key: value for key, value in tensors.items()
                                                    if not key.startswith(PROMPTS_PREFIX)}, weights_path))
    return _typed(meta, 'metrics', dict, meta_path)


def read_metrics(path: str | Path) -> dict:
    """Return a checkpoint's recorded metrics, without reading its weights."""
    meta_path = checkpoint_stem(path).with_suffix(META_SUFFIX)
    return _typed(_read_meta(meta_path), 'metrics', dict, meta_path)


def load_model(path: str | Path) -> LoadedModel:
    """Rebuild the model from its config and load the verified weights (stem, ``.yaml`` or ``.safetensors``)."""
    stem = checkpoint_stem(path)
    meta_path, weights_path = stem.with_suffix(META_SUFFIX), stem.with_suffix(WEIGHTS_SUFFIX)
    meta = _read_meta(meta_path)
    try:
        cfg = config_from_dict(meta['config'], where=f'{meta_path}: config')
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    try:
        classes = tuple(parse_class_entry(entry, cfg.model.text_dim, f'{meta_path}: classes[{i}]')
                        for i, entry in enumerate(_typed(meta, 'classes', list, meta_path)))
        generic_class = parse_class_entry(meta['generic_class'], cfg.model.text_dim, f'{meta_path}: generic_class')
    except ContractError as exc:
        raise CheckpointError(str(exc)) from exc
    if not classes:
        raise CheckpointError(f'{meta_path}: key "classes" is empty: a deployable model needs a class table')

    tensors = read_verified_safetensors(weights_path, _typed(meta, 'weights_sha256', str, meta_path), meta_path,
                                        CheckpointError)

    prompts = {key.removeprefix(PROMPTS_PREFIX): value.float() for key, value in tensors.items()
               if key.startswith(PROMPTS_PREFIX)}
    model = build_model(cfg.model)
    model.load_state_dict(_match_state_dict(model, {key: value for key, value in tensors.items()
                                                    if not key.startswith(PROMPTS_PREFIX)}, weights_path))
    model.eval()
    return LoadedModel(model=model, cfg=cfg, classes=classes, generic_class=generic_class,
                       data_manifest_hash=_typed(meta, 'data_manifest_hash', str, meta_path),
                       metrics=_typed(meta, 'metrics', dict, meta_path), prompts=prompts)


def _read_meta(meta_path: Path) -> dict:
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f'{meta_path}: cannot read checkpoint metadata: {exc}') from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f'{meta_path}: expected a mapping with keys {list(META_KEYS)}')
    missing = [key for key in META_KEYS if key not in meta]
    unknown = sorted(set(meta) - set(META_KEYS))
    if missing or unknown:
        raise CheckpointError(f'{meta_path}: missing key(s) {missing}, unknown key(s) {unknown}')
    return meta


def _typed(meta: dict, key: str, kind: type, meta_path: Path) -> object:
    if not isinstance(meta[key], kind):
        raise CheckpointError(f'{meta_path}: key "{key}" must be a {kind.__name__}, got {type(meta[key]).__name__}')
    return meta[key]


def _match_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], weights_path: Path) -> dict:
    """Return the loaded tensors in the model's dtypes, after checking names and shapes against the model."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f'{weights_path}: does not fit the config: missing key(s) {missing[:5]}'
                              f'{" …" if len(missing) > 5 else ""}, unexpected key(s) {unexpected[:5]}'
                              f'{" …" if len(unexpected) > 5 else ""}')
    for key, reference in expected.items():
        if tensors[key].shape != reference.shape:
            raise CheckpointError(f'{weights_path}: key "{key}" has shape {tuple(tensors[key].shape)}, the config '
                                  f'builds {tuple(reference.shape)}')
    return {key: tensors[key].to(reference.dtype) for key, reference in expected.items()}


def read_verified_safetensors(weights_path: Path, expected_sha256: str, recorded_in: Path,
                              error: type[Exception]) -> dict[str, torch.Tensor]:
    """
    Return the tensors of ``weights_path`` after checking its bytes against the sha256 recorded in ``recorded_in``.

    Every failure is ``error`` naming the file (a truncated copy and a swapped file both fail the hash).
    """
    try:
        blob = weights_path.read_bytes()
    except OSError as exc:
        raise error(f'{weights_path}: cannot read the weights: {exc}') from exc
    actual_sha256 = hashlib.sha256(blob).hexdigest()
    if actual_sha256 != expected_sha256:
        raise error(f'{weights_path}: sha256 {actual_sha256[:12]}… does not match key "weights_sha256" '
                    f'{expected_sha256[:12]}… in {recorded_in} (truncated, corrupt or replaced)')
    try:
        return load_safetensors_bytes(blob)
    except SafetensorError as exc:
        raise error(f'{weights_path}: not a readable safetensors file: {exc}') from exc
