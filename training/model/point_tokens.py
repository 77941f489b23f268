"""
Point tokens: a Point-MAE-style encoder over the fixed seed sphere, folded into a constant.

MESC-3D (CVPR 2025, arXiv 2502.20861) feeds the same 2048-point sphere of radius 0.5 to a frozen Point-MAE encoder
for every sample (upstream ``src/models/Point_MAE.py:16-80,430-560``, ``pro_model.py:374``; method.md §3.2). Its
output (concat of the cls token and the max over groups, reshaped to 24 × 32) is therefore a constant. We run our own
small Point-MAE-style encoder (farthest point sampling, kNN grouping, mini-PointNet, transformer) once at
construction and keep only the resulting (T, D) tokens, so nothing input-independent runs at inference and nothing
here needs a custom op.

No Point-MAE weights exist offline, so the encoder is randomly initialised (with a fixed seed) and frozen. Default
(``point_tokens: sphere_encoder``): the tokens are a buffer, as faithful to upstream as we can be. A random frozen
encoder adds no information that a learnable table could not, and MIT reads the tokens through LayerNorm and learned
projections anyway, so ``point_tokens: learnable`` (a parameter initialised from the same tokens) is offered as the
ablation rather than the default.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

SPHERE_RADIUS = 0.5
"""Radius of upstream's seed sphere (3DAttriFlow's ``balls/2048.xyz`` rescaled to 0.5)."""
SPHERE_POINTS = 2048
"""Points in the seed sphere the encoder reads; fixed whatever the decoder's point count."""
ENCODER_SEED = 20250227
"""Seed of the frozen random encoder, so every build of a config yields the same tokens."""


def fibonacci_sphere(num_points: int, radius: float = SPHERE_RADIUS) -> torch.Tensor:
    """(num_points, 3) float32 near-uniform points on a sphere (golden-angle spiral), deterministic."""
    if num_points < 1:
        raise ValueError(f'a sphere needs at least one point, got num_points={num_points}')
    i = torch.arange(num_points, dtype=torch.float64)
    z = 1.0 - (2.0 * i + 1.0) / num_points          # heights at equal-area band centres, in (-1, 1)
    r = torch.sqrt(1.0 - z * z)
    theta = i * math.pi * (3.0 - math.sqrt(5.0))     # golden angle
    xyz = torch.stack([r * torch.cos(theta), r * torch.sin(theta), z], dim=-1)  # (N, 3) unit sphere
    return (radius * xyz).float()


def farthest_point_sample(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """
    (B, num_samples) indices of a farthest-point subset of points (B, N, 3), starting from point 0.

    Plain torch (one loop step per sample) instead of Point-MAE's CUDA op; starting at index 0 keeps it
    deterministic.
    """
    batch, n, _ = points.shape
    if not 0 < num_samples <= n:
        raise ValueError(f'cannot sample {num_samples} of {n} points')
    chosen = torch.zeros(batch, num_samples, dtype=torch.long, device=points.device)
    nearest = torch.full((batch, n), math.inf, device=points.device)   # squared distance to the chosen set
    current = torch.zeros(batch, dtype=torch.long, device=points.device)
    rows = torch.arange(batch, device=points.device)
    for k in range(num_samples):
        chosen[:, k] = current
        d = ((points - points[rows, current][:, None, :]) ** 2).sum(-1)   # (B, N)
        nearest = torch.minimum(nearest, d)
        current = nearest.argmax(dim=1)
    return chosen


def knn_groups(points: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """(B, G, k, 3) the k nearest points of each centre, relative to it; points (B, N, 3), centres (B, G, 3)."""
    idx = torch.cdist(centres, points).topk(k, dim=-1, largest=False).indices   # (B, G, k)
    batch = torch.arange(points.shape[0], device=points.device)[:, None, None]
    return points[batch, idx] - centres[:, :, None, :]


class MiniPointNet(nn.Module):
    """Point-MAE's group encoder: shared MLP, max, concat the group max back, shared MLP, max."""

    def __init__(self, width: int):
        super().__init__()
        self.first = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 256, 1))
        self.second = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(), nn.Conv1d(512, width, 1))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """Group (B, G, k, 3) -> (B, G, width)."""
        b, g, k, _ = groups.shape
        x = self.first(groups.reshape(b * g, k, 3).transpose(1, 2))                  # (B·G, 256, k)
        x = torch.cat([x.amax(dim=2, keepdim=True).expand(-1, -1, k), x], dim=1)     # (B·G, 512, k)
        return self.second(x).amax(dim=2).reshape(b, g, -1)                          # (B, G, width)


class SphereEncoder(nn.Module):
    """
    Point-MAE-style encoder: FPS centres, kNN groups, mini-PointNet, cls token + transformer, (cls ‖ max).

    Upstream runs Point-MAE's 12 blocks of width 384; with random frozen weights extra depth adds cost and nothing
    else, so we keep the width and use 4 blocks.
    """

    def __init__(self, out_dim: int, groups: int = 64, group_size: int = 32, width: int = 384, depth: int = 4,
                 heads: int = 6):
        super().__init__()
        self.groups, self.group_size = groups, group_size
        self.group_encoder = MiniPointNet(width)
        self.position = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                           activation='gelu', batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(2 * width, out_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Points (B, N, 3) -> (B, out_dim)."""
        centres = points[torch.arange(points.shape[0])[:, None], farthest_point_sample(points, self.groups)]
        tokens = self.group_encoder(knn_groups(points, centres, self.group_size)) + self.position(centres)
        tokens = torch.cat([self.cls_token.expand(points.shape[0], -1, -1), tokens], dim=1)   # (B, 1+G, width)
        tokens = self.norm(self.blocks(tokens))
        return self.head(torch.cat([tokens[:, 0], tokens[:, 1:].amax(dim=1)], dim=-1))


@functools.cache
def sphere_tokens(num_tokens: int, token_dim: int) -> torch.Tensor:
    """
    (num_tokens, token_dim) tokens of the frozen random encoder over the seed sphere; same for every call.

    Cached per process (a pure function of its arguments); callers must clone before keeping the tensor.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(ENCODER_SEED)
        encoder = SphereEncoder(num_tokens * token_dim)
        # Train mode for BatchNorm: with random weights the running statistics are meaningless (0 and 1), while
        # batch statistics over the sphere's groups keep the features well scaled. Dropout is 0, so this is
        # deterministic.
        encoder.train()
        flat = encoder(fibonacci_sphere(SPHERE_POINTS)[None])[0]          # (T·D,)
    # Standardised so that the point stream enters MIT at the same scale whatever the random head produced.
    flat = (flat - flat.mean()) / flat.std()
    return flat.reshape(num_tokens, token_dim)


class PointTokens(nn.Module):
    """The (T, D) point-stream tokens: a frozen buffer (``sphere_encoder``) or a parameter (``learnable``)."""

    def __init__(self, num_tokens: int, token_dim: int, learnable: bool):
        super().__init__()
        tokens = sphere_tokens(num_tokens, token_dim).clone()
        if learnable:
            self.tokens = nn.Parameter(tokens)
        else:
            self.register_buffer('tokens', tokens)   # persistent: a checkpoint carries the exact constant

    def forward(self, batch_size: int) -> torch.Tensor:
        """(B, T, D) the tokens repeated over the batch (a broadcast view, no copy)."""
        return self.tokens[None].expand(batch_size, -1, -1)
