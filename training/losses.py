"""
Training losses: Chamfer reconstruction (MESC-3D trains on CD-L1 only) and the 3DSPL contrastive loss.

The Chamfer losses reuse ``metrics``' exact nearest-neighbour search, so a loss value and the reported metric of the
same batch are the same number (averaged over the batch here, per sample there).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

from mesc3d_training.metrics import chamfer_l1, chamfer_l2, nearest_squared_distances


def reconstruction_loss(pred: torch.Tensor, gt: torch.Tensor,
                        kind: Literal['cd_l1', 'cd_l2', 'cd_l1_l2']) -> torch.Tensor:
    """
    Scalar batch mean of CD-L1, CD-L2 or their sum between pred (B, N, 3) and gt (B, M, 3) (``TrainConfig.loss``).

    The sum is upstream's base-model loss (method.md §4); one nearest-neighbour search serves both terms.
    """
    d = nearest_squared_distances(pred, gt)
    if kind == 'cd_l1':
        return chamfer_l1(d).mean()
    if kind == 'cd_l2':
        return chamfer_l2(d).mean()
    if kind == 'cd_l1_l2':
        return (chamfer_l1(d) + chamfer_l2(d)).mean()
    raise ValueError(f'unknown reconstruction loss {kind!r}; expected cd_l1, cd_l2 or cd_l1_l2')


def info_nce(points: torch.Tensor, texts: torch.Tensor, temperature: float,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """
    Symmetric InfoNCE between points (B, D) and texts (B, D) embeddings; row i of each is a positive pair.

    S = p̂ t̂ᵀ / τ with L2-normalised rows; loss = ½ [CE(S, targets) + CE(Sᵀ, targetsᵀ)]. Without labels the targets
    are the identity (upstream's loss, method.md §3.6; upstream's τ is effectively 1, ``TrainConfig.temperature``
    sets it). With labels (B,), every pair of the same label is a positive and the target row is uniform over
    them: upstream counts same-class pairs as negatives, which with a per-class text embedding asks the loss to
    separate identical vectors.
    """
    if points.shape != texts.shape or points.ndim != 2:
        raise ValueError(f'expected two (B, D) embeddings, got {tuple(points.shape)} and {tuple(texts.shape)}')
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    logits = F.normalize(points, dim=1) @ F.normalize(texts, dim=1).T / temperature          # (B, B)
    if labels is None:
        targets = torch.eye(len(points), device=points.device)
    else:
        same = (labels[:, None] == labels[None, :]).float()                                   # symmetric
        targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))   # targets is symmetric
