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
from mesc3d_training.model.image_encoder import ImageEncoder
from mesc3d_training.model.mit import MIT
from mesc3d_training.model.point_tokens import PointTokens


class MESC3D(nn.Module):
    """The inference graph: ``forward(image, class_embedding) -> points``; ``cfg`` checked itself when it was made."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
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
