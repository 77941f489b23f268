"""Image encoder: torchvision ResNet-18 turned into MIT's image tokens.

MESC-3D upstream (``src/models/encoder.py:97-154``, ``pro_model.py:234-235,368,379``; method.md §3.1) trains a
ResNet-18 from scratch and uses only its fc-1000 logits, mapped by a Linear layer to 768 = 24 tokens × 32 dims. That
is ``image_tokens: fc`` here. ``image_tokens: spatial`` instead projects every cell of the layer4 map to D and pools
the cells into T tokens with a learned linear map (an improvement to ablate, not the default).

Normalisation: upstream feeds [0, 1] RGB unnormalised. We subtract the ImageNet mean and divide by its std inside
the graph (buffers). From scratch this changes nothing that matters (conv1 is linear and bn1 re-normalises right
after it), but it is exactly what an ImageNet state dict given via ``image_weights`` expects, so one behaviour serves
both cases and the exported model still takes [0, 1] RGB.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from mesc3d_ros.config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET18_LAYERS = (2, 2, 2, 2)


def feature_map_size(image_size: int) -> int:
    """Side of ResNet's layer4 map for a square input: the stem and each strided stage halve it (rounding up)."""
    side = image_size
    for _ in range(5):   # conv1 (stride 2), maxpool (stride 2), layer2..4 (stride 2 each)
        side = (side + 1) // 2
    return side


def load_image_weights(resnet: ResNet, path: str) -> None:
    """Load a local ImageNet ResNet-18 state dict (``.pth``/``.pt`` or ``.safetensors``) into ``resnet``, strictly."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f'image_weights: no such file {file} (nothing is ever downloaded)')
    state = load_file(file) if file.suffix == '.safetensors' else torch.load(file, map_location='cpu',
                                                                              weights_only=True)
    try:
        resnet.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f'image_weights: {file} is not a torchvision ResNet-18 state dict: {exc}') from exc


class ImageEncoder(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, T, D) image tokens."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_tokens, self.token_dim = cfg.num_tokens, cfg.token_dim
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        resnet = ResNet(BasicBlock, list(cfg.resnet_layers))   # (2, 2, 2, 2) is torchvision's resnet18
        if cfg.image_weights:
            load_image_weights(resnet, cfg.image_weights)
        self.spatial = cfg.image_tokens == 'spatial'
        if self.spatial:
            # Everything up to layer4; avgpool and fc would receive no gradient.
            self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                          resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
            self.cell_proj = nn.Conv2d(512, cfg.token_dim, 1)
            # A learned map from the h·w cells to the T tokens. Adaptive pooling to a T-cell grid would be the
            # obvious choice, but it does not export to ONNX when the map size is not a multiple of the grid.
            self.cell_pool = nn.Linear(feature_map_size(cfg.image_size) ** 2, cfg.num_tokens)
        else:
            self.backbone = resnet
            self.to_tokens = nn.Linear(1000, cfg.num_tokens * cfg.token_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        if self.spatial:
            cells = self.cell_proj(self.backbone(x)).flatten(2)            # (B, D, h·w)
            return self.cell_pool(cells).transpose(1, 2)                   # (B, T, D)
        logits = self.backbone(x)                                          # (B, 1000) fc logits, as upstream
        return self.to_tokens(logits).unflatten(1, (self.num_tokens, self.token_dim))   # (B, T, D)
