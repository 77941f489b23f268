"""
MIT: the multimodal interlaced transformer that fuses image and point tokens.

MESC-3D upstream ``src/network/pro_model.py:111-174,246-261,382-387`` (method.md §3.3); the interlacing follows the
Multimodal Interlaced Transformer (ICCV 2023). Each block updates one stream (the query) from the other (key/value)
with three pre-LN residual steps: self-attention, cross-attention, MLP. Block 0 updates the point stream from the
image stream, block 1 the image stream from the updated point stream, and so on; the image stream after the last
block is the fused feature.

Attention is written as plain matmuls: with 24 tokens there is nothing to gain from a fused kernel, and the graph
exports to ONNX opset 17 as MatMul/Softmax without depending on how an exporter lowers scaled_dot_product_attention.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from mesc3d_ros.config import ModelConfig


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                         dropout: nn.Dropout) -> torch.Tensor:
    """Softmax attention; q (B, Tq, D), k and v (B, Tk, D) -> (B, Tq, D), dropout on the probabilities."""
    q, k, v = (x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in (q, k, v))   # (B, h, T, D/h)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)                      # (B, h, Tq, Tk)
    out = dropout(scores.softmax(dim=-1)) @ v                                     # (B, h, Tq, D/h)
    return out.transpose(1, 2).flatten(2)                                         # (B, Tq, D)


class SelfAttention(nn.Module):
    """Fused qkv projection without bias (as upstream), output projection with bias."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj_drop(self.proj(multi_head_attention(q, k, v, self.heads, self.attn_drop)))


class CrossAttention(nn.Module):
    """Separate q, k, v projections without bias (as upstream), output projection with bias."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = multi_head_attention(self.q(query), self.k(context), self.v(context), self.heads, self.attn_drop)
        return self.proj_drop(self.proj(out))


class MITBlock(nn.Module):
    """Query ← query + self-attn, + cross-attn to context, + MLP; each pre-LN, each through DropPath."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, drop_path: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads, dropout)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))
        # Upstream uses the same rate in every block (no linear ramp); 'row' drops per sample.
        self.drop_path = StochasticDepth(drop_path, 'row')

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        query = query + self.drop_path(self.self_attn(self.norm1(query)))
        query = query + self.drop_path(self.cross_attn(self.norm_query(query), self.norm_context(context)))
        return query + self.drop_path(self.mlp(self.norm2(query)))


class MIT(nn.Module):
    """Interlaced blocks; even blocks update the point stream, odd blocks the image stream."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(MITBlock(cfg.token_dim, cfg.mit_heads, cfg.mlp_ratio, cfg.dropout, cfg.drop_path)
                                    for _ in range(cfg.mit_depth))

    def forward(self, point_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """point_tokens, image_tokens (B, T, D) -> fused feature (B, T·D), the final image stream flattened."""
        for i, block in enumerate(self.blocks):
            if i % 2 == 0:
                point_tokens = block(point_tokens, image_tokens)
            else:
                image_tokens = block(image_tokens, point_tokens)
        return image_tokens.flatten(1)
