"""
ESM + staged decoder: per-point selection maps and AdaptivePointNorm over a broadcast global feature.

MESC-3D upstream ``src/network/pro_model.py:175-206,294-321,388-416`` (method.md §3.4-3.5). F1 = [fused ‖ projected
class embedding] is the same vector at every one of the N points. Each modulated stage i computes

    x'  = LeakyReLU0.2(BN(Conv1x1(x)))                   (B, C_i, N)
    S_i = W_i ⊙ F1                                         W_i (C1, N) learned: the point-selection map (ESM)
    [γ; β] = Conv1x1_{C1→2C_i}(S_i);  x = γ ⊙ x' + β       AdaptivePointNorm

then plain conv stages and a 3-d tanh head. Per-point identity comes only from the columns of W_i: output index j
is a learned slot.

Decisions where upstream and paper disagree (one line each, alternatives where cheap):

- No InstanceNorm before the modulation: upstream computes it and throws it away; applying it would be degenerate
  in stage 1, where x' is identical at every point and its instance norm is therefore zero.
- Stage count = ``len(decoder_widths)``: 5 as upstream runs (the figure draws 6); add a width for 6.
- The class projection (upstream's ``telinear``, never trained because it sits under no-grad) is trained here: a
  frozen random projection of a per-class constant only wastes capacity.
- Stage 1's conv runs once per sample, not once per point, because its input is the same at every point; the
  result is broadcast before BatchNorm, so the statistics are exactly upstream's.
- ``selection_rank`` r > 0 factorises W_i = U_i V_i (C1 × r times r × N). The product is never materialised:
  Conv(W ⊙ F1) = (A · diag(F1) · U) · V costs 2C·C1·r + 2C·r·N per sample instead of 2C·C1·N.
- ``use_selection_maps: false`` (ESM ablation): γ, β come from F1 alone, so they are shared by all points; per-point
  identity then comes from the fixed seed sphere (the same Fibonacci sphere as the point tokens, N points, radius
  0.5) fed as 3 extra input channels to stage 1, as folding decoders do.
"""

from __future__ import annotations

import torch
from torch import nn

from mesc3d_ros.config import ModelConfig
from mesc3d_training.model.point_tokens import fibonacci_sphere

SELECTION_INIT_STD = 0.01
"""Std of each entry of W_i at initialisation (upstream: normal, std 0.01), also for the low-rank product."""


def conv_bn_act(c_in: int, c_out: int) -> nn.Sequential:
    """Kernel-1 Conv1d without bias, BatchNorm1d (statistics over batch × points), LeakyReLU(0.2), as upstream."""
    return nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out), nn.LeakyReLU(0.2))


class SelectionMap(nn.Module):
    """W (C1, N) as a full parameter or as U (C1, r) · V (r, N)."""

    def __init__(self, channels: int, num_points: int, rank: int):
        super().__init__()
        self.rank = rank
        if rank == 0:
            self.weight = nn.Parameter(torch.randn(channels, num_points) * SELECTION_INIT_STD)
        else:
            # Entries of U·V are sums of r products, so std(U) = std(V) = (0.01² / r)^(1/4) gives std(W) = 0.01.
            std = (SELECTION_INIT_STD ** 2 / rank) ** 0.25
            self.u = nn.Parameter(torch.randn(channels, rank) * std)
            self.v = nn.Parameter(torch.randn(rank, num_points) * std)


class AdaptivePointNorm(nn.Module):
    """[γ; β] = Conv1x1(W ⊙ F1), x ← γ ⊙ x + β; W is this stage's selection map (None: shared over points)."""

    def __init__(self, feature_dim: int, channels: int, selection: SelectionMap | None):
        super().__init__()
        self.channels = channels
        self.selection = selection
        self.style = nn.Conv1d(feature_dim, 2 * channels, 1)
        # Upstream's init: weight N(0, 1), bias 1 for γ and 0 for β, so a fresh stage is close to the identity.
        nn.init.normal_(self.style.weight, 0.0, 1.0)
        with torch.no_grad():
            self.style.bias[:channels] = 1.0
            self.style.bias[channels:] = 0.0

    def forward(self, x: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """X (B, C, N), feature F1 (B, C1) -> (B, C, N)."""
        s = self.selection
        if s is None:
            style = self.style(feature[:, :, None])                                  # (B, 2C, 1), shared
        elif s.rank == 0:
            style = self.style(s.weight[None] * feature[:, :, None])                 # (B, 2C, N)
        else:
            scaled_u = feature[:, :, None] * s.u[None]                               # (B, C1, r) = diag(F1)·U
            mixed = self.style.weight[:, :, 0] @ scaled_u                            # (B, 2C, r)
            bias = self.style.bias[:, None]                                          # (2C, 1)
            # Split the (B, 2C, r) product, not the (B, 2C, N) style: the same values without a copy of the style
            # maps (that Split was 4-8 % of ONNX Runtime's CPU time per call of 5 objects, mobile config).
            c = self.channels
            gamma = mixed[:, :c] @ s.v + bias[:c]                                    # (B, C, N)
            beta = mixed[:, c:] @ s.v + bias[c:]                                     # (B, C, N)
            return torch.addcmul(beta, gamma, x)
        gamma, beta = style.split(self.channels, dim=1)
        return torch.addcmul(beta, gamma, x)                                         # γ ⊙ x + β, one pass


class Decoder(nn.Module):
    """F1 (B, C1) -> points (B, N, 3) in (-1, 1)."""

    def __init__(self, cfg: ModelConfig, feature_dim: int):
        super().__init__()
        self.num_points = cfg.num_points
        widths = cfg.decoder_widths
        self.input_conv = nn.Conv1d(feature_dim, widths[0], 1, bias=False)
        if cfg.use_selection_maps:
            self.seed_conv = None
        else:
            self.seed_conv = nn.Conv1d(3, widths[0], 1, bias=False)
            self.register_buffer('seed', fibonacci_sphere(cfg.num_points).T[None].contiguous(),  # (1, 3, N)
                                 persistent=False)
        self.input_norm = nn.Sequential(nn.BatchNorm1d(widths[0]), nn.LeakyReLU(0.2))
        self.convs = nn.ModuleList(conv_bn_act(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.modulations = nn.ModuleList(
            AdaptivePointNorm(feature_dim, width,
                              SelectionMap(feature_dim, cfg.num_points, cfg.selection_rank)
                              if cfg.use_selection_maps else None)
            for width in widths)
        tail = (widths[-1],) + cfg.tail_widths
        self.tail = nn.Sequential(*(conv_bn_act(c_in, c_out) for c_in, c_out in zip(tail[:-1], tail[1:])))
        self.head = nn.Conv1d(tail[-1], 3, 1, bias=False)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.input_conv(feature[:, :, None])                                     # (B, C_1, 1)
        x = x.expand(-1, -1, self.num_points)                                        # (B, C_1, N)
        if self.seed_conv is not None:
            x = x + self.seed_conv(self.seed)
        x = self.modulations[0](self.input_norm(x), feature)
        for conv, modulation in zip(self.convs, self.modulations[1:]):
            x = modulation(conv(x), feature)                                         # (B, C_i, N)
        x = torch.tanh(self.head(self.tail(x)))                                      # (B, 3, N)
        return x.transpose(1, 2)                                                     # (B, N, 3)
