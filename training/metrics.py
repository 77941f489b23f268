"""
Point-cloud reconstruction metrics with MESC-3D's definitions (method.md §7), per sample.

Nearest neighbours are exact and plain torch (chunked ``torch.cdist``, CPU or GPU, no custom ops). All distances
are in the clouds' own units; for MESC-3D both clouds live in the unit ball (radius 1), and no metric is rescaled
here: report CD × 10² or × 10⁴ explicitly where a table does.

With d1_i the squared distance from ground-truth point i to the nearest predicted point and d2_j the squared
distance from predicted point j to the nearest ground-truth point:

- CD-L1 = ½ (mean_i √d1_i + mean_j √d2_j)       (units of length)
- CD-L2 = mean_i d1_i + mean_j d2_j               (length², a sum, not halved, as upstream)
- F-score(t) = 2PR / (P + R), P = fraction of d2_j < t, R = fraction of d1_i < t, 0 when P + R = 0; the threshold
  t is on the *squared* distance. The paper's F-score uses t = 0.01 (0.1 Euclidean in unit-ball units,
  ``fscore_paper``); the common F-score@1 % uses t = 1e-4 (0.01 Euclidean, ``fscore_1pct``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FSCORE_PAPER_SQ_THRESHOLD = 0.01
"""Upstream's threshold on the squared distance: 0.1 Euclidean in unit-ball units (method.md §7)."""
FSCORE_1PCT_SQ_THRESHOLD = 1e-4
"""0.01 Euclidean (1 % of the unit-ball radius), squared: the ChamferDistancePytorch / 3DAttriFlow default."""
CHUNK_ELEMENTS = 1 << 24
"""Largest pairwise-distance block (batch × rows × columns) materialised at once: 64 MB of float32."""


@dataclass(frozen=True)
class NearestSquaredDistances:
    """Squared nearest-neighbour distances in both directions."""

    gt_to_pred: torch.Tensor
    """(B, M) d1: from each ground-truth point to the nearest predicted point."""
    pred_to_gt: torch.Tensor
    """(B, N) d2: from each predicted point to the nearest ground-truth point."""


def nearest_indices(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, N) index in target (B, M, 3) of the nearest point to each source (B, N, 3) point, chunked over N."""
    rows = max(1, CHUNK_ELEMENTS // max(1, source.shape[0] * target.shape[1]))
    with torch.no_grad():
        return torch.cat([torch.cdist(chunk, target).argmin(dim=2) for chunk in source.split(rows, dim=1)], dim=1)


def nearest_squared_distances(pred: torch.Tensor, gt: torch.Tensor) -> NearestSquaredDistances:
    """
    Exact squared NN distances between pred (B, N, 3) and gt (B, M, 3); N and M may differ.

    The search (cdist, argmin) runs without grad; the distances are then recomputed from the matched pairs, so they
    are exact (cdist's matrix-product form loses precision for close points) and differentiable in both clouds.
    Two neighbours tied within float32 rounding may be swapped, which changes a distance by less than that rounding.
    """
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[-1] != 3 or gt.shape[-1] != 3 or pred.shape[0] != gt.shape[0]:
        raise ValueError(f'expected pred (B, N, 3) and gt (B, M, 3), got {tuple(pred.shape)} and {tuple(gt.shape)}')
    batch = torch.arange(pred.shape[0], device=pred.device)[:, None]
    pred_match = pred[batch, nearest_indices(gt, pred)]                      # (B, M, 3) nearest pred per gt point
    gt_match = gt[batch, nearest_indices(pred, gt)]                          # (B, N, 3) nearest gt per pred point
    return NearestSquaredDistances(gt_to_pred=((gt - pred_match) ** 2).sum(-1),
                                   pred_to_gt=((pred - gt_match) ** 2).sum(-1))


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """√x with a finite gradient at exactly 0 (where it is set to 0) and an exact value everywhere."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def chamfer_l1(d: NearestSquaredDistances) -> torch.Tensor:
    """(B,) CD-L1 = ½ (mean √d1 + mean √d2)."""
    return 0.5 * (safe_sqrt(d.gt_to_pred).mean(dim=1) + safe_sqrt(d.pred_to_gt).mean(dim=1))


def chamfer_l2(d: NearestSquaredDistances) -> torch.Tensor:
    """(B,) CD-L2 = mean d1 + mean d2 (not halved)."""
    return d.gt_to_pred.mean(dim=1) + d.pred_to_gt.mean(dim=1)


def fscore(d: NearestSquaredDistances, sq_threshold: float) -> torch.Tensor:
    """(B,) F-score with precision/recall counted at squared distance < ``sq_threshold``; 0 where P + R = 0."""
    precision = (d.pred_to_gt < sq_threshold).float().mean(dim=1)
    recall = (d.gt_to_pred < sq_threshold).float().mean(dim=1)
    total = precision + recall
    return torch.where(total > 0, 2 * precision * recall / total.clamp_min(1e-12), torch.zeros_like(total))


METRIC_KEYS = ('cd_l1', 'cd_l2', 'fscore_paper', 'fscore_1pct')
"""The keys of :func:`reconstruction_metrics`, in the order tables and logs show them."""


def reconstruction_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample (B,) ``cd_l1``, ``cd_l2``, ``fscore_paper`` (d² < 0.01) and ``fscore_1pct`` (d² < 1e-4)."""
    with torch.no_grad():
        d = nearest_squared_distances(pred, gt)
        return {'cd_l1': chamfer_l1(d), 'cd_l2': chamfer_l2(d),
                'fscore_paper': fscore(d, FSCORE_PAPER_SQ_THRESHOLD),
                'fscore_1pct': fscore(d, FSCORE_1PCT_SQ_THRESHOLD)}
