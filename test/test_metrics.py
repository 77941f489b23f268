"""Chamfer / F-score metrics and the losses against brute-force numpy references and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mesc3d_training import metrics
from mesc3d_training.losses import info_nce, reconstruction_loss
from mesc3d_training.metrics import nearest_squared_distances, reconstruction_metrics


def brute_force(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Return the definitions of method.md §7 in float64 numpy, one sample at a time."""
    out = {'cd_l1': [], 'cd_l2': [], 'fscore_paper': [], 'fscore_1pct': []}
    for p, g in zip(pred.astype(np.float64), gt.astype(np.float64)):
        sq = ((g[:, None, :] - p[None, :, :]) ** 2).sum(-1)     # (M, N)
        d1, d2 = sq.min(axis=1), sq.min(axis=0)                 # gt -> pred, pred -> gt
        out['cd_l1'].append(0.5 * (np.sqrt(d1).mean() + np.sqrt(d2).mean()))
        out['cd_l2'].append(d1.mean() + d2.mean())
        for key, t in (('fscore_paper', 0.01), ('fscore_1pct', 1e-4)):
            precision, recall = (d2 < t).mean(), (d1 < t).mean()
            out[key].append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return {k: np.asarray(v) for k, v in out.items()}


def assert_matches_brute_force(pred: np.ndarray, gt: np.ndarray) -> None:
    got = reconstruction_metrics(torch.from_numpy(pred), torch.from_numpy(gt))
    for key, expected in brute_force(pred, gt).items():
        assert got[key].shape == (pred.shape[0],)
        np.testing.assert_allclose(got[key].numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=key)


def test_metrics_equal_brute_force_on_random_clouds_of_unequal_size():
    rng = np.random.default_rng(0)
    pred = rng.uniform(-1, 1, (3, 200, 3)).astype(np.float32)
    gt = rng.uniform(-1, 1, (3, 331, 3)).astype(np.float32)
    assert_matches_brute_force(pred, gt)
    # Clouds close enough that both F-score thresholds fall between 0 and 1.
    near = (gt[:, :150] + rng.normal(0, 0.02, (3, 150, 3))).astype(np.float32)
    assert_matches_brute_force(near, gt)
    scores = reconstruction_metrics(torch.from_numpy(near), torch.from_numpy(gt))
    assert (0 < scores['fscore_1pct']).all() and (scores['fscore_1pct'] < scores['fscore_paper']).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 60), st.integers(1, 60), st.floats(0.01, 2.0), st.integers(0, 2**31))
def test_metrics_equal_brute_force_for_any_sizes_and_scales(batch, n, m, scale, seed):
    rng = np.random.default_rng(seed)
    pred = (rng.normal(size=(batch, n, 3)) * scale).astype(np.float32)
    gt = (rng.normal(size=(batch, m, 3)) * scale).astype(np.float32)
    assert_matches_brute_force(pred, gt)


def test_chunked_search_equals_unchunked(monkeypatch):
    g = torch.Generator().manual_seed(1)
    pred, gt = torch.rand(2, 300, 3, generator=g), torch.rand(2, 257, 3, generator=g)
    whole = nearest_squared_distances(pred, gt)
    monkeypatch.setattr(metrics, 'CHUNK_ELEMENTS', 2 * 257 * 7)                  # 7 rows per chunk
    chunked = nearest_squared_distances(pred, gt)
    assert torch.equal(whole.gt_to_pred, chunked.gt_to_pred) and torch.equal(whole.pred_to_gt, chunked.pred_to_gt)


def test_identical_clouds_score_zero_distance_and_full_fscore_with_finite_gradients():
    cloud = torch.rand(2, 64, 3)
    scores = reconstruction_metrics(cloud, cloud)
    assert torch.equal(scores['cd_l1'], torch.zeros(2)) and torch.equal(scores['cd_l2'], torch.zeros(2))
    assert torch.equal(scores['fscore_paper'], torch.ones(2)) and torch.equal(scores['fscore_1pct'], torch.ones(2))
    pred = cloud.clone().requires_grad_(True)
    reconstruction_loss(pred, cloud, 'cd_l1').backward()                         # √0 must not give NaN
    assert torch.isfinite(pred.grad).all()


def test_fscore_is_zero_not_nan_when_nothing_is_within_the_threshold():
    scores = reconstruction_metrics(torch.zeros(1, 5, 3), torch.full((1, 7, 3), 5.0))
    assert scores['fscore_paper'].item() == 0.0 and scores['fscore_1pct'].item() == 0.0


def test_reconstruction_losses_are_batch_means_of_the_metrics_and_train_the_prediction():
    g = torch.Generator().manual_seed(2)
    pred, gt = torch.rand(4, 50, 3, generator=g).requires_grad_(True), torch.rand(4, 70, 3, generator=g)
    scores = reconstruction_metrics(pred, gt)
    torch.testing.assert_close(reconstruction_loss(pred, gt, 'cd_l1'), scores['cd_l1'].mean())
    torch.testing.assert_close(reconstruction_loss(pred, gt, 'cd_l2'), scores['cd_l2'].mean())
    torch.testing.assert_close(reconstruction_loss(pred, gt, 'cd_l1_l2'),
                               (scores['cd_l1'] + scores['cd_l2']).mean())
    loss = reconstruction_loss(pred, gt, 'cd_l2')
    loss.backward()
    with torch.no_grad():
        stepped = reconstruction_loss(pred - 0.05 * pred.grad / pred.grad.norm(), gt, 'cd_l2')
    assert stepped < loss
    with pytest.raises(ValueError, match='emd'):
        reconstruction_loss(pred, gt, 'emd')


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r'\(2, 5, 2\)'):
        nearest_squared_distances(torch.zeros(2, 5, 2), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match='pred'):
        nearest_squared_distances(torch.zeros(2, 5, 3), torch.zeros(3, 5, 3))


def test_info_nce_equals_a_hand_computation():
    points = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    texts = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    tau = 0.5
    p = points.numpy() / np.linalg.norm(points.numpy(), axis=1, keepdims=True)
    t = texts.numpy() / np.linalg.norm(texts.numpy(), axis=1, keepdims=True)
    s = p @ t.T / tau

    def mean_ce(logits: np.ndarray, targets: np.ndarray) -> float:
        log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-(targets * log_softmax).sum(axis=1).mean())

    expected = 0.5 * (mean_ce(s, np.eye(3)) + mean_ce(s.T, np.eye(3)))
    assert info_nce(points, texts, tau).item() == pytest.approx(expected, rel=1e-6)
    # Labels: samples 0 and 2 share a class, so each is a positive of the other (targets ½, ½).
    same = np.array([[0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]])
    expected_labelled = 0.5 * (mean_ce(s, same) + mean_ce(s.T, same))
    assert info_nce(points, texts, tau, labels=torch.tensor([4, 7, 4])).item() == pytest.approx(expected_labelled,
                                                                                                rel=1e-6)
    # Upstream's τ = 1 is just another temperature.
    s1 = p @ t.T
    assert info_nce(points, texts, 1.0).item() == pytest.approx(0.5 * (mean_ce(s1, np.eye(3)) +
                                                                       mean_ce(s1.T, np.eye(3))), rel=1e-6)
    with pytest.raises(ValueError, match='temperature'):
        info_nce(points, texts, 0.0)
