"""
Where this package's share files are (launch, config, shipped models), however it was installed.

- **Source tree** (``make setup``'s editable install, ``PYTHONPATH=<checkout>``): the checkout itself, so edits to
  ``config/`` or ``models/`` apply without reinstalling.
- **Installed** (``colcon build``, ``pip install .``): ``<prefix>/share/mesc3d_ros``, found through the ament index
  (``AMENT_PREFIX_PATH``, what ``ros2 launch`` uses) or, without one, beside the prefix this module is installed in.

Shipped models are ``models/<name>.json`` (model contract) + the ONNX graph it names, one pair per training checkpoint
``models/<name>.safetensors`` (written by ``mesc3d ship``), the graph reading its weights from that checkpoint file;
the node's ``model_path`` accepts such a bare name. This module imports neither rclpy nor torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mesc3d_ros.contract import ContractError, file_sha256

PACKAGE = 'mesc3d_ros'
DEFAULT_MODEL = 'mesc3d_mobile'
"""The shipped model the node loads when ``model_path`` is not given (``models/<DEFAULT_MODEL>.json``)."""
CHECKPOINT_SUFFIXES = ('.safetensors', '.yaml', '.yml', '.pt', '.pth', '.ckpt')
EXTERNAL_WEIGHTS_KEY = 'external_weights'
"""Key of ``<name>.source.json`` naming the checkpoint file whose bytes the shipped ONNX graph reads."""
_HEADER_LENGTH_BYTES = 8  # a safetensors file starts with the little-endian length of its JSON header
_MAX_HEADER_BYTES = 1 << 27


class ShareNotFoundError(FileNotFoundError):
    """Neither a source checkout nor an installed share folder of the package was found."""


def source_root() -> Path | None:
    """Return the checkout this module runs from (it has this package's package.xml), else None."""
    root = Path(__file__).resolve().parent.parent
    manifest = root / 'package.xml'
    if manifest.is_file() and f'<name>{PACKAGE}</name>' in manifest.read_text():
        return root
    return None


def installed_share() -> Path | None:
    """``share/mesc3d_ros`` of an install: the ament index first, then the prefix holding this module."""
    for prefix in filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)):
        if (Path(prefix) / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE).is_file():
            return Path(prefix) / 'share' / PACKAGE
    # <prefix>/lib/pythonX.Y/site-packages/mesc3d_ros/package_share.py -> <prefix>/share/mesc3d_ros
    here = Path(__file__).resolve()
    for prefix in (here.parents[4], here.parents[3]) if len(here.parents) > 4 else ():
        if (prefix / 'share' / PACKAGE / 'package.xml').is_file():
            return prefix / 'share' / PACKAGE
    return None


def share_dir() -> Path:
    """Return the folder holding ``launch/``, ``config/`` and ``models/`` of this package."""
    root = source_root() or installed_share()
    if root is None:
        raise ShareNotFoundError(
            f'cannot find the {PACKAGE} share folder: not a source checkout, no "{PACKAGE}" in the ament index '
            f'(AMENT_PREFIX_PATH={os.environ.get("AMENT_PREFIX_PATH", "")!r}) and no share/{PACKAGE} beside '
            f'{Path(__file__).resolve().parent}; source the workspace (install/setup.bash) or reinstall')
    return root


def share_file(*parts: str) -> Path:
    """
    Return the path of a file under the share folder; FileNotFoundError if absent.

    For example ``share_file('config', 'reconstruct.yaml')``.
    """
    path = share_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f'{path} is missing from the {PACKAGE} share folder {share_dir()}')
    return path


def shipped_models() -> dict[str, Path]:
    """Name -> contract JSON of every shipped model (``models/<name>.json``)."""
    models = share_dir() / 'models'
    if not models.is_dir():
        return {}
    # <name>.source.json beside a contract records its checkpoint; only dot-free stems are contracts.
    return {path.stem: path for path in sorted(models.glob('*.json')) if '.' not in path.stem}


def resolve_model(model: str) -> Path:
    """
    Return the contract JSON for ``model_path``.

    Empty = :data:`DEFAULT_MODEL`, a bare name = a shipped model, else a path.

    A training checkpoint (``.safetensors``, its ``.yaml``) cannot run in the node: the error says how to export it.
    """
    model = model or DEFAULT_MODEL
    path = Path(model).expanduser()
    if os.sep not in model and path.suffix == '' and not path.exists():
        shipped = shipped_models()
        if model not in shipped:
            raise FileNotFoundError(f'model_path "{model}" is neither a file nor a shipped model; shipped: '
                                    f'{", ".join(shipped) or "none"} (in {share_dir() / "models"})')
        check_external_weights(shipped[model])
        return shipped[model]
    if path.suffix in CHECKPOINT_SUFFIXES or _is_safetensors(path):
        raise ContractError(
            f'model_path {path} is a training checkpoint; the node runs an exported model (ONNX + contract JSON). '
            f'Export it where the training environment (torch) is installed: `mesc3d export {path} --out-dir '
            f"<folder>`, then pass model_path:=<folder>/<name>.json (the name is the config's model.name)")
    check_external_weights(path)
    return path


def check_external_weights(contract_path: Path) -> None:
    """
    Refuse a shipped model (ContractError) whose weights file is not the one it was shipped with.

    A shipped model's graph reads its weights at fixed offsets of the checkpoint file recorded in
    ``<name>.source.json``.
    """
    source_path = contract_path.with_name(f'{contract_path.stem}.source.json')
    if not source_path.is_file():
        return
    try:
        source = json.loads(source_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f'{source_path}: unreadable source record: {exc}') from exc
    if EXTERNAL_WEIGHTS_KEY not in source:
        return
    weights = contract_path.with_name(source[EXTERNAL_WEIGHTS_KEY])
    if not weights.is_file():
        raise ContractError(f'{contract_path}: its weights file {weights} is missing')
    if file_sha256(weights) != source.get('weights_sha256'):
        raise ContractError(f'{weights} is not the checkpoint {contract_path.name} was shipped with (sha256 differs '
                            f'from {source_path.name}): run `mesc3d ship {weights}` to ship it again')


def safetensors_header(path: Path) -> tuple[dict, int]:
    """(tensor name -> {dtype, shape, data_offsets}, byte offset where tensor data starts) of a safetensors file."""
    with open(path, 'rb') as handle:
        length = int.from_bytes(handle.read(_HEADER_LENGTH_BYTES), 'little')
        if not 0 < length < _MAX_HEADER_BYTES:
            raise ValueError(f'{path}: not a safetensors file (header length {length})')
        header = json.loads(handle.read(length))
    header.pop('__metadata__', None)
    return header, _HEADER_LENGTH_BYTES + length


def _is_safetensors(path: Path) -> bool:
    """Return True for a safetensors file under another name: a small little-endian length, then a JSON object."""
    try:
        with open(path, 'rb') as handle:
            head = handle.read(_HEADER_LENGTH_BYTES + 1)
    except OSError:
        return False
    return (len(head) == _HEADER_LENGTH_BYTES + 1 and head[_HEADER_LENGTH_BYTES:] == b'{'
            and 0 < int.from_bytes(head[:_HEADER_LENGTH_BYTES], 'little') < _MAX_HEADER_BYTES)
