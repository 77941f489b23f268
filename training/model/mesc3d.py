"""
MESC-3D: one image + one class embedding -> one point cloud (the inference graph).

MESC-3D (Li et al., CVPR 2025, arXiv 2502.20861; upstream ``QINGQINGLE/MESC-3D`` @6c16418,
``src/network/pro_model.py``). Specification: method.md; shapes and sizes of our presets: docs/model.md.

    image (B, 3, H, W) ─ ImageEncoder ─ (B, T, D) ┐
    sphere tokens (constant) ────────── (B, T, D) ┴ MIT ─ fused (B, T·D) ┐
    class_embedding (B, text_dim) ─ Linear ─ (B, class_dim) ─────────────┴ F1 (B, C1) ─ Decoder ─ points (B, N, 3)

The class embedding is computed outside this graph, once per class, by the 3DSPL text prior (``text_prior.py``), so
the exported model takes an embedding and new class names need no re-export. Everything input-independent (the
point encoder, the text encoder) is folded into buffers or tables before this graph runs, and every op is standard
ONNX (opset 17).
"""

from __future__ import annotations

import torch
from torch import nn

from mesc3d_ros.config import ModelConfig
from mesc3d_training.model.decoder import Decoder
from mesc3d_training.model.image_encoder import IMAGENET_WEIGHTS, RESNET18_LAYERS, ImageEncoder
from mesc3d_training.model.mit import MIT
from mesc3d_training.model.point_tokens import PointTokens


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ValueError naming the field when a ModelConfig cannot build a model."""
    problems = []
    if cfg.image_size < 32:
        problems.append(f'image_size={cfg.image_size}: ResNet needs at least 32 pixels')
    if cfg.num_points < 1 or cfg.num_tokens < 1 or cfg.token_dim < 1:
        problems.append(f'num_points, num_tokens, token_dim must be >= 1, got {cfg.num_points}, {cfg.num_tokens}, '
                        f'{cfg.token_dim}')
    if cfg.token_dim % cfg.mit_heads:
        problems.append(f'token_dim={cfg.token_dim} is not divisible by mit_heads={cfg.mit_heads}')
    if cfg.mit_depth < 2 or cfg.mit_depth % 2:
        # The last block must update the image stream (the one decoded), or the point stream's last update is dead.
        problems.append(f'mit_depth={cfg.mit_depth}: must be even and >= 2')
    if not cfg.decoder_widths:
        problems.append('decoder_widths is empty: at least one modulated stage is needed')
    if cfg.selection_rank < 0:
        problems.append(f'selection_rank={cfg.selection_rank} must be >= 0')
    if len(cfg.resnet_layers) != 4 or min(cfg.resnet_layers) < 1:
        problems.append(f'resnet_layers={cfg.resnet_layers}: need four block counts >= 1')
    if cfg.image_backbone == 'resnet':
        if cfg.image_weights == IMAGENET_WEIGHTS:
            problems.append('image_weights: imagenet ships for mobilenet_v2 only; give a local ResNet-18 file')
        elif cfg.image_weights and tuple(cfg.resnet_layers) != RESNET18_LAYERS:
            problems.append(f'image_weights needs resnet_layers={RESNET18_LAYERS}, got {cfg.resnet_layers}')
    elif cfg.image_tokens == 'fc':
        problems.append(f'image_tokens=fc is the ResNet logits path; {cfg.image_backbone} takes pooled or spatial')
    if not 0.0 <= cfg.dropout < 1.0 or not 0.0 <= cfg.drop_path < 1.0:
        problems.append(f'dropout={cfg.dropout}, drop_path={cfg.drop_path} must be in [0, 1)')
    if problems:
        raise ValueError(f'model config {cfg.name!r}: ' + '; '.join(problems))


class MESC3D(nn.Module):
    """The inference graph: ``forward(image, class_embedding) -> points``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_model_config(cfg)
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.point_tokens = PointTokens(cfg.num_tokens, cfg.token_dim, learnable=cfg.point_tokens == 'learnable')
        self.mit = MIT(cfg)
        self.class_proj = nn.Linear(cfg.text_dim, cfg.class_dim)
        self.decoder = Decoder(cfg, feature_dim=cfg.num_tokens * cfg.token_dim + cfg.class_dim)

    def forward(self, image: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """
        Image (B, 3, H, W) float32 RGB in [0, 1]; class_embedding (B, text_dim) float32.

        Returns points (B, N, 3) float32 in (-1, 1): the unit-ball shape in the training data's output frame.
        """
        return self.from_trunk(self.image_encoder.trunk_features(image), class_embedding)

    def from_trunk(self, trunk_features: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """Return the graph after the image trunk (what the cached recipe trains): trunk output -> points (B, N, 3)."""
        image_tokens = self.image_encoder.tokens(trunk_features)                     # (B, T, D)
        batch = class_embedding.shape[0]   # a graph input: the exported batch stays dynamic
        fused = self.mit(self.point_tokens(batch), image_tokens)            # (B, T·D)
        if not self.cfg.use_class_prior:
            # 3DSPL ablation: same graph and inputs, the embedding carries nothing (the branch keeps its bias).
            class_embedding = torch.zeros_like(class_embedding)
        feature = torch.cat([fused, self.class_proj(class_embedding)], dim=1)        # (B, C1) = F1
        return self.decoder(feature)
