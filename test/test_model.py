"""MESC-3D network: shapes, determinism, gradients, parameter arithmetic, budgets, ONNX export parity."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet18

from mesc3d_ros.config import Config, ModelConfig, load_config, save_config
from mesc3d_training.losses import reconstruction_loss
from mesc3d_training.model import MESC3D, build_model
from mesc3d_training.model.decoder import AdaptivePointNorm, SelectionMap
from mesc3d_training.model.image_encoder import pretrained_mobilenet_v2
from mesc3d_training.model.point_tokens import (SPHERE_RADIUS, farthest_point_sample, fibonacci_sphere, knn_groups,
                                                sphere_tokens)
from mesc3d_training.reports.markdown_blocks import markers
from mesc3d_training.reports.model_summary import BLOCK, summarise
from mesc3d_training.reports.model_summary import main as model_summary_main

REPO = Path(__file__).resolve().parents[1]
SOCCER_BALL = 805
"""ImageNet-1k class index of 'soccer ball'."""


def preset(name: str) -> ModelConfig:
    return load_config(REPO / 'config' / f'mesc3d_{name}.yaml').model


def tiny_model_config(**changes) -> ModelConfig:
    """Return the small preset shrunk to test size; every block of the network is still there."""
    tiny = dataclasses.replace(preset('small'), name='tiny', image_size=32, num_points=48, num_tokens=8,
                               token_dim=16, mit_heads=4, class_dim=16, decoder_widths=(32, 24, 16),
                               tail_widths=(8,), selection_rank=4)
    return dataclasses.replace(tiny, **changes)


def inputs(cfg: ModelConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g),
            torch.randn(batch, cfg.text_dim, generator=g))


def macs(model: MESC3D) -> int:
    cfg = model.cfg
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(*inputs(cfg, 1))
    return counter.get_total_flops() // 2


@pytest.fixture(scope='module')
def paper_model() -> MESC3D:
    torch.manual_seed(0)
    return build_model(preset('paper')).eval()


def test_paper_forward_batch_1_shape_dtype_range(paper_model):
    with torch.no_grad():
        points = paper_model(*inputs(paper_model.cfg, 1))
    assert points.shape == (1, 2048, 3) and points.dtype == torch.float32
    assert torch.isfinite(points).all() and points.abs().max() < 1.0   # tanh head


def test_small_forward_train_and_eval_shapes():
    model = build_model(preset('small'))
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            points = model(*inputs(model.cfg, 2))
        assert points.shape == (2, 1024, 3) and points.dtype == torch.float32 and torch.isfinite(points).all()


def test_small_preset_fits_its_budget(paper_model):
    small = build_model(preset('small'))
    trainable = sum(p.numel() for p in small.parameters() if p.requires_grad)
    assert trainable <= 10_000_000
    assert macs(small) <= 0.15 * macs(paper_model)


def test_paper_parameter_counts_match_the_architecture_arithmetic(paper_model):
    cfg = paper_model.cfg
    c1 = cfg.num_tokens * cfg.token_dim + cfg.class_dim                          # 768 + 512 = 1280
    widths = cfg.decoder_widths
    tail = (widths[-1],) + cfg.tail_widths
    expected = {   # convs carry their BatchNorm's weight and bias (2 per channel)
        'ResNet backbone': 11_689_512,                                            # torchvision resnet18
        'image tokens (Linear / cell projection + pooling)': 1000 * 768 + 768,
        'point tokens (sphere encoder, folded)': 0,
        'MIT (4 interlaced blocks)': 4 * 12_704,                                  # method.md §3.3
        'class projection (text_dim → class_dim)': 384 * 512 + 512,
        'decoder stage-1 conv + BN': c1 * widths[0] + 2 * widths[0],
        'decoder stage 2..k convs + BN': sum(a * b + 2 * b for a, b in zip(widths[:-1], widths[1:])),
        'ESM selection maps W_i': 5 * 1280 * 2048,                                # 13.1 M
        'AdaPN style convs (γ, β)': sum(c1 * 2 * w + 2 * w for w in widths),     # 6.89 M
        'tail convs + 3-d head': sum(a * b + 2 * b for a, b in zip(tail[:-1], tail[1:])) + tail[-1] * 3,
    }
    rows = {row.label: row for row in summarise(paper_model)}
    print(f'\n{"module":50s} {"counted":>12s} {"arithmetic":>12s}')
    for label, count in expected.items():
        print(f'{label:50s} {rows[label].trainable:12,d} {count:12,d}')
    assert {label: rows[label].trainable for label in expected} == expected
    assert rows['**total**'].trainable == sum(expected.values()) == 35_370_184
    assert expected['ESM selection maps W_i'] == 13_107_200
    assert rows['point tokens (sphere encoder, folded)'].frozen == 24 * 32


VARIANTS = {
    'default (low rank)': {},
    'full-rank maps': {'selection_rank': 0},
    'spatial image tokens': {'image_tokens': 'spatial'},
    'mobilenet_v2 spatial tokens': {'image_backbone': 'mobilenet_v2', 'image_tokens': 'spatial', 'image_size': 64},
    'mobilenet_v2 pooled tokens': {'image_backbone': 'mobilenet_v2', 'image_tokens': 'pooled'},
    'mobilenet_v2 with a trained trunk tail': {'image_backbone': 'mobilenet_v2', 'image_tokens': 'spatial',
                                               'image_size': 64, 'trainable_trunk_blocks': 4},
    'learnable point tokens': {'point_tokens': 'learnable'},
    'no selection maps (ESM ablation)': {'use_selection_maps': False},
    'six stages': {'decoder_widths': (32, 32, 24, 24, 16, 16)},
}


@pytest.mark.parametrize('changes', VARIANTS.values(), ids=VARIANTS.keys())
def test_every_trainable_parameter_gets_a_gradient_from_the_reconstruction_loss(changes):
    torch.manual_seed(0)
    cfg = tiny_model_config(**changes)
    model = build_model(cfg)
    gt = torch.rand(3, 40, 3) * 2 - 1
    reconstruction_loss(model(*inputs(cfg, 3)), gt, 'cd_l1').backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []
    # Frozen: the folded sphere tokens are a buffer, never a parameter, unless configured learnable.
    names = dict(model.named_parameters())
    assert ('point_tokens.tokens' in names) == (cfg.point_tokens == 'learnable')


def test_class_prior_ablation_keeps_the_input_but_ignores_it():
    torch.manual_seed(0)
    cfg = tiny_model_config(use_class_prior=False)
    model = build_model(cfg).eval()
    image, embedding = inputs(cfg, 2)
    with torch.no_grad():
        assert torch.equal(model(image, embedding), model(image, torch.randn_like(embedding)))
    torch.manual_seed(0)
    with_prior = build_model(tiny_model_config()).eval()
    with torch.no_grad():
        assert not torch.allclose(with_prior(image, embedding), with_prior(image, torch.randn_like(embedding)))


def test_eval_output_is_deterministic_under_a_seed():
    cfg = tiny_model_config()
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(cfg).eval()
        with torch.no_grad():
            outputs.append(model(*inputs(cfg, 2)))
            outputs.append(model(*inputs(cfg, 2)))
    assert all(torch.equal(outputs[0], out) for out in outputs[1:])
    torch.manual_seed(124)
    with torch.no_grad():
        assert not torch.equal(build_model(cfg).eval()(*inputs(cfg, 2)), outputs[0])


def test_points_are_not_collapsed_with_and_without_selection_maps():
    for use_maps in (True, False):
        torch.manual_seed(0)
        cfg = tiny_model_config(use_selection_maps=use_maps)
        # Train mode: an untrained model's BatchNorm running statistics are (0, 1), which saturates the tanh in
        # eval mode; batch statistics are what the network starts training with.
        with torch.no_grad():
            points = build_model(cfg).train()(*inputs(cfg, 2))                   # (B, N, 3)
        assert points.std(dim=1).min() > 0.05                                     # per-point identity exists
        assert (points.abs() > 0.99).float().mean() < 0.01                        # not saturated at init


def test_low_rank_modulation_equals_the_materialised_selection_map():
    torch.manual_seed(0)
    channels, feature_dim, points, rank = 6, 10, 20, 3
    low = AdaptivePointNorm(feature_dim, channels, SelectionMap(feature_dim, points, rank))
    full = AdaptivePointNorm(feature_dim, channels, SelectionMap(feature_dim, points, 0))
    full.style.load_state_dict(low.style.state_dict())
    with torch.no_grad():
        full.selection.weight.copy_(low.selection.u @ low.selection.v)
    x, feature = torch.randn(4, channels, points), torch.randn(4, feature_dim)
    torch.testing.assert_close(low(x, feature), full(x, feature), rtol=1e-5, atol=1e-5)


def test_sphere_tokens_are_a_constant_of_the_config():
    torch.manual_seed(1)
    first = build_model(tiny_model_config()).point_tokens.tokens.clone()
    torch.manual_seed(2)
    second = build_model(tiny_model_config()).point_tokens.tokens
    assert torch.equal(first, second) and first.shape == (8, 16)
    learnable = build_model(tiny_model_config(point_tokens='learnable')).point_tokens.tokens
    assert isinstance(learnable, torch.nn.Parameter) and torch.equal(learnable.detach(), first)
    assert torch.isclose(sphere_tokens(24, 32).std(), torch.tensor(1.0))


def test_fibonacci_sphere_is_on_the_radius_and_near_uniform():
    sphere = fibonacci_sphere(2048)
    assert sphere.shape == (2048, 3)
    torch.testing.assert_close(sphere.norm(dim=1), torch.full((2048,), SPHERE_RADIUS))
    nn_dist = torch.cdist(sphere, sphere).fill_diagonal_(math.inf).amin(dim=1)
    assert nn_dist.max() / nn_dist.min() < 1.6                                    # no clumps, no holes
    assert sphere.mean(dim=0).abs().max() < 1e-3


def test_farthest_point_sampling_and_knn_match_brute_force():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2, 50, 3, generator=g)
    idx = farthest_point_sample(points, 6)
    for b in range(2):
        chosen = [0]
        p = points[b].numpy().astype(np.float64)
        for _ in range(5):
            d = ((p[:, None] - p[chosen][None]) ** 2).sum(-1).min(axis=1)
            chosen.append(int(d.argmax()))
        assert idx[b].tolist() == chosen
    centres = points[:, :4]
    groups = knn_groups(points, centres, 5)                                       # (2, 4, 5, 3)
    for b in range(2):
        for c in range(4):
            d = ((points[b] - centres[b, c]) ** 2).sum(-1)
            expected = points[b, d.argsort()[:5]] - centres[b, c]
            torch.testing.assert_close(groups[b, c].sort(dim=0).values, expected.sort(dim=0).values)


def test_image_weights_load_from_a_local_file(tmp_path):
    reference = resnet18(weights=None)
    path = tmp_path / 'resnet18.pth'
    torch.save(reference.state_dict(), path)
    cfg = tiny_model_config(resnet_layers=(2, 2, 2, 2), image_weights=str(path))
    model = build_model(cfg)
    torch.testing.assert_close(model.image_encoder.backbone.conv1.weight, reference.conv1.weight)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        build_model(dataclasses.replace(cfg, image_weights=str(tmp_path / 'missing.pth')))
    with pytest.raises(ValueError, match='resnet_layers'):
        build_model(dataclasses.replace(cfg, resnet_layers=(1, 1, 1, 1)))


def render_soccer_ball(size: int) -> list[np.ndarray]:
    """(size, size, 3) uint8 renders of pybullet_data's soccer ball on white, from three sides."""
    from mesc3d_training.data.render import ObjectRenderer, look_at_pose
    from mesc3d_training.data.sources import load_object, pybullet_sources

    ball = load_object(next(s for s in pybullet_sources() if s.object_id == 'pybullet_soccerball'))
    radius = max(float(np.linalg.norm(part.vertices, axis=1).max()) for part in ball.meshes)
    centre = np.mean([part.vertices.mean(0) for part in ball.meshes], axis=0)
    K = np.array([[size, 0.0, (size - 1) / 2], [0.0, size, (size - 1) / 2], [0.0, 0.0, 1.0]])
    cameras = [(K, look_at_pose(centre + 3 * radius * np.array([math.sin(a), 0.4, math.cos(a)]), centre, 0.0))
               for a in (0.3, 1.5, 3.0)]
    renderer = ObjectRenderer(size, scene_ranges=None)   # the ball alone, no scene around it
    try:
        views = renderer.render_views(ball, cameras, np.random.default_rng(0))
    finally:
        renderer.close()
    return [np.where(view['mask'][..., None], view['rgb'], 255).astype(np.uint8) for view in views]


def test_mobilenet_v2_carries_the_imagenet_weights_of_its_wheel():
    """
    The packaged weights load strictly and are the trained ones.

    Renders of a soccer ball are ImageNet class 805 ('soccer ball') with high confidence, through the encoder's own
    normalisation and trunk.
    """
    cfg = tiny_model_config(image_backbone='mobilenet_v2', image_weights='imagenet', image_tokens='pooled',
                            image_size=224)
    encoder = build_model(cfg).image_encoder.eval()
    reference = pretrained_mobilenet_v2('imagenet').eval()
    images = torch.from_numpy(np.stack(render_soccer_ball(224))).permute(0, 3, 1, 2).float() / 255   # (3, 3, S, S)
    with torch.no_grad():
        pooled = encoder.last_conv(encoder.trunk_features(images)).mean(dim=(2, 3))           # (3, 1280)
        probabilities = reference.classifier(pooled).softmax(dim=1)
    assert probabilities.argmax(dim=1).tolist() == [SOCCER_BALL] * 3
    assert probabilities[:, SOCCER_BALL].min() > 0.9
    with torch.no_grad():
        random_init = build_model(dataclasses.replace(cfg, image_weights='')).image_encoder.eval()
        guess = reference.classifier(random_init.last_conv(random_init.trunk_features(images)).mean(dim=(2, 3)))
    assert guess.softmax(dim=1)[:, SOCCER_BALL].max() < 0.5     # the test can fail: random weights do not know balls
    with pytest.raises(ValueError, match='mobilenet_v2 only'):
        build_model(tiny_model_config(image_weights='imagenet'))
    with pytest.raises(ValueError, match='pooled or spatial'):
        build_model(dataclasses.replace(cfg, image_tokens='fc'))


@pytest.mark.parametrize('changes, field', [({'mit_heads': 5}, 'mit_heads'), ({'mit_depth': 3}, 'mit_depth'),
                                            ({'decoder_widths': ()}, 'decoder_widths'),
                                            ({'selection_rank': -1}, 'selection_rank'),
                                            ({'trainable_trunk_blocks': 2}, 'trainable_trunk_blocks'),
                                            ({'image_backbone': 'mobilenet_v2', 'image_tokens': 'spatial',
                                              'trainable_trunk_blocks': 18}, 'trainable_trunk_blocks')])
def test_bad_config_is_rejected_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        build_model(tiny_model_config(**changes))


# The TorchScript exporter is deprecated but is the one that emits opset 17 (the dynamo exporter's minimum is 18).
@pytest.mark.filterwarnings('ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning')
@pytest.mark.filterwarnings('ignore:The feature will be removed:DeprecationWarning')
@pytest.mark.parametrize('dynamo, opset, changes', [
    (False, 17, {}), (True, 18, {}),
    (False, 17, {'image_backbone': 'mobilenet_v2', 'image_weights': 'imagenet', 'image_tokens': 'spatial',
                 'image_size': 64})], ids=['torchscript-opset17', 'dynamo-opset18', 'mobilenet-v2-opset17'])
def test_onnx_export_with_dynamic_batch_matches_torch(tmp_path, dynamo, opset, changes):
    torch.manual_seed(0)
    cfg = tiny_model_config(**changes)
    model = build_model(cfg).eval()
    path = tmp_path / 'model.onnx'
    names = {'input_names': ['image', 'class_embedding'], 'output_names': ['points']}
    if dynamo:
        batch = torch.export.Dim('batch')
        program = torch.onnx.export(model, inputs(cfg, 2), **names, opset_version=opset, dynamo=True,
                                    dynamic_shapes={'image': {0: batch}, 'class_embedding': {0: batch}})
        program.save(str(path))
    else:
        torch.onnx.export(model, inputs(cfg, 2), str(path), **names, opset_version=opset, dynamo=False,
                          dynamic_axes={'image': {0: 'batch'}, 'class_embedding': {0: 'batch'}, 'points': {0: 'batch'}})
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for batch_size in (1, 3):
        image, embedding = inputs(cfg, batch_size, seed=batch_size)
        (points,) = session.run(None, {'image': image.numpy(), 'class_embedding': embedding.numpy()})
        with torch.no_grad():
            expected = model(image, embedding).numpy()
        assert points.shape == (batch_size, cfg.num_points, 3)
        np.testing.assert_allclose(points, expected, atol=1e-4, rtol=0)


def test_model_summary_rewrites_only_its_block(tmp_path):
    configs = []
    for name, changes in (('ref', {}), ('narrow', {'decoder_widths': (16, 8)})):
        path = tmp_path / f'{name}.yaml'
        save_config(Config(model=tiny_model_config(name=name, **changes)), path)
        configs.append(path)
    doc = tmp_path / 'model.md'
    begin, end = markers(BLOCK)
    doc.write_text(f'intro\n{begin}\nstale\n{end}\noutro\n')
    assert model_summary_main([str(p) for p in configs] + ['--write', str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(f'intro\n{begin}\n') and text.endswith(f'{end}\noutro\n') and 'stale' not in text
    assert '| ref params | ref MMAC | narrow params | narrow MMAC |' in text and '| **total** |' in text
    assert '| decoder (output) | (1, 48, 3) |' in text
