"""
Stage (a) of training, 3DSPL: learn the class prompts, then freeze them into the class-embedding table.

Upstream (method.md §3.6) aligns the prompted CLIP text embedding of a class name with a frozen ULIP Point-BERT
embedding of the ground-truth cloud, with a symmetric InfoNCE loss at temperature 1 that treats every other sample
in the batch, same class included, as a negative. What we do instead, and why:

- **Point encoder trained here, jointly with the prompts.** No ULIP or Point-MAE weights exist offline, so the
  target is ``text_prior.PointCloudEncoder`` (a PointNet) trained from scratch in this stage. A randomly initialised
  frozen encoder would give targets that carry no class structure for the prompts to align with.
- **Supervised-contrastive targets.** A class's text embedding is the same vector for all its samples, so
  instance-level InfoNCE asks the loss to separate identical vectors and is minimised only by ignoring the class.
  We pass the labels to ``losses.info_nce``: every same-class pair is a positive (uniform target over them).
- **Canonical-frame clouds with yaw and scale augmentation**: the class is a property of the shape, not of the view.
- **Selection** as upstream: the epoch with the best mean matched-pair cosine on the validation split.

The output is a :class:`ClassTable`: one embedding per training category, the held-out (zero-shot) categories
embedded from their names alone through the same prompts, and a generic ``object`` entry, each with its metric size
prior. The reconstruction stage reads it frozen (upstream freezes the prompts too).
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save as save_safetensors_bytes
from torch.utils.data import DataLoader

from mesc3d_ros.config import Config
from mesc3d_ros.contract import ClassEntry, ContractError, class_entry_to_dict, parse_class_entry, write_atomic
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.losses import info_nce
from mesc3d_training.model.text_prior import PointCloudEncoder, TextPrior
from mesc3d_training.schedule import WarmupCosine, step_scheduler

log = logging.getLogger(__name__)

GENERIC_CLASS = 'object'
"""Name embedded for the generic entry (the node's fallback for class names outside the table)."""
NON_METRIC_SIZE_M = 1.0
"""size_m for layouts without metric scale (ShapeNet): the node's size prior is meaningless there anyway."""
PROMPT_POINTS = 1024
"""Points per cloud fed to the PointNet per step: a random half of the 2048-point ground truth (augmentation)."""
TABLE_FILE = 'class_table.yaml'
PROMPTS_FILE = 'prompts.safetensors'


@dataclass(frozen=True)
class ClassTable:
    """The frozen class embeddings the reconstruction model is trained and deployed with."""

    classes: tuple[ClassEntry, ...]
    """Training categories first, then the held-out (zero-shot) ones."""
    generic: ClassEntry
    metrics: dict
    """The prompt stage's validation numbers (empty when the stage was skipped)."""

    def embeddings_for(self, names: list[str]) -> torch.Tensor:
        """(B, D) float32 rows for category names; names outside the table get the generic embedding."""
        rows = {entry.name: entry.embedding for entry in self.classes}
        return torch.tensor([rows.get(name, self.generic.embedding) for name in names], dtype=torch.float32)

    def save(self, path: Path) -> Path:
        text = yaml.safe_dump({'classes': [class_entry_to_dict(e) for e in self.classes],
                               'generic_class': class_entry_to_dict(self.generic), 'metrics': self.metrics},
                              sort_keys=False)
        return write_atomic(Path(path), text.encode())

    @staticmethod
    def load(path: Path, dim: int) -> ClassTable:
        try:
            data = yaml.safe_load(Path(path).read_text())
            return ClassTable(
                classes=tuple(parse_class_entry(e, dim, f'{path}: classes[{i}]')
                              for i, e in enumerate(data['classes'])),
                generic=parse_class_entry(data['generic_class'], dim, f'{path}: generic_class'),
                metrics=dict(data['metrics']))
        except (OSError, yaml.YAMLError, KeyError, TypeError, ContractError) as exc:
            raise ValueError(f'{path}: unreadable class table: {exc}') from exc


def learn_class_table(cfg: Config, out_dir: Path, device: torch.device) -> ClassTable:
    """
    Run the 3DSPL stage on the training split.

    Writes ``class_table.yaml``, ``prompts.safetensors`` and ``prompt_log.csv`` into ``out_dir`` and returns the table.

    Deterministic for a given ``cfg.train.seed`` on one machine.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    train_set = ReconstructionDataset(cfg.data, 'train', cfg.model.image_size, train=False)
    names = tuple(c for c in train_set.categories if c not in cfg.data.held_out_categories)
    zero_shot = tuple(cfg.data.held_out_categories)
    sizes = train_set.category_sizes_m
    prior = TextPrior(cfg.model).to(device)
    metrics: dict = {}
    if cfg.train.prompt_epochs > 0:
        clouds, labels = canonical_clouds(train_set, names)
        val_clouds, val_labels = canonical_clouds(
            ReconstructionDataset(cfg.data, 'val', cfg.model.image_size, train=False), names)
        metrics = _fit_prompts(cfg, prior, names, clouds, labels, val_clouds, val_labels, out_dir, device)
    table = prior.class_table(list(names + zero_shot + (GENERIC_CLASS,))).cpu()
    known_sizes = [sizes[n] for n in names if n in sizes]
    generic_size = statistics.median(known_sizes) if known_sizes else NON_METRIC_SIZE_M
    entries = tuple(ClassEntry(name=n, embedding=tuple(table[i].tolist()), size_m=float(sizes.get(n, generic_size)))
                    for i, n in enumerate(names + zero_shot))
    result = ClassTable(classes=entries, metrics=metrics,
                        generic=ClassEntry(GENERIC_CLASS, tuple(table[-1].tolist()), float(generic_size)))
    write_atomic(out_dir / PROMPTS_FILE, save_safetensors_bytes(
        {k: v.detach().cpu().contiguous() for k, v in prior.prompts.state_dict().items()}))
    result.save(out_dir / TABLE_FILE)
    log.info('3DSPL: class table with %d training + %d zero-shot classes + generic; %s', len(names), len(zero_shot),
             metrics or 'prompts untrained (prompt_epochs: 0)')
    return result


def canonical_clouds(dataset: ReconstructionDataset, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    (M, G, 3) ground-truth clouds in the canonical frame and (M,) class indices, one per object.

    The dataset serves clouds in ``DataConfig.frame`` with the ``rotation`` that took canonical to it; rotations
    (and the mirror a flip adds) are orthogonal, so ``points @ rotation`` undoes them.
    """
    loader = DataLoader(dataset, batch_size=32, num_workers=0)
    clouds, labels = [], []
    for batch in loader:
        keep = [i for i, category in enumerate(batch['category']) if category in names]
        clouds.append(batch['points'][keep] @ batch['rotation'][keep])                # (b, G, 3) canonical
        labels += [names.index(batch['category'][i]) for i in keep]
    if not labels:
        raise ValueError(f'{dataset.root}: split {dataset.split!r} has no object of the classes {list(names)}')
    return torch.cat(clouds), torch.tensor(labels, dtype=torch.long)


def _fit_prompts(cfg: Config, prior: TextPrior, names: tuple[str, ...], clouds: torch.Tensor, labels: torch.Tensor,
                 val_clouds: torch.Tensor, val_labels: torch.Tensor, out_dir: Path, device: torch.device) -> dict:
    tc = cfg.train
    encoder = PointCloudEncoder(cfg.model.text_dim).to(device)
    params = [*prior.prompts.parameters(), *encoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=tc.prompt_lr, eps=tc.adam_eps)
    count = len(clouds) if not tc.prompt_max_objects else min(tc.prompt_max_objects, len(clouds))
    batch_size = min(tc.prompt_batch_size, count)
    steps_per_epoch = max(1, count // batch_size)
    scheduler = step_scheduler(optimizer, WarmupCosine(tc.prompt_lr, tc.warmup_lr, tc.min_lr,
                                                       min(tc.prompt_warmup_epochs, tc.prompt_epochs),
                                                       tc.prompt_epochs), steps_per_epoch)
    generator = torch.Generator().manual_seed(tc.seed)
    best = {'val_cosine': -math.inf}
    best_state = None
    with open(out_dir / 'prompt_log.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['epoch', 'loss', 'lr', 'val_cosine', 'val_accuracy'])
        for epoch in range(tc.prompt_epochs):
            prior.train()
            encoder.train()
            order = torch.randperm(len(clouds), generator=generator)[:steps_per_epoch * batch_size]
            losses = []
            for step in range(steps_per_epoch):
                index = order[step * batch_size:(step + 1) * batch_size]
                points = augment(clouds[index], generator).to(device)                 # (b, PROMPT_POINTS, 3)
                texts = prior(list(names))                                           # (C, D) unit norm
                loss = info_nce(encoder(points), texts[labels[index].to(device)], tc.temperature,
                                labels[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            scores = _alignment(prior, encoder, names, val_clouds, val_labels, device)
            writer.writerow([epoch + 1, f'{np.mean(losses):.5f}', f'{scheduler.get_last_lr()[0]:.3g}',
                             f'{scores["val_cosine"]:.4f}', f'{scores["val_accuracy"]:.4f}'])
            handle.flush()
            log.info('3DSPL epoch %d/%d: loss %.4f, val matched cosine %.3f, val accuracy %.3f', epoch + 1,
                     tc.prompt_epochs, np.mean(losses), scores['val_cosine'], scores['val_accuracy'])
            if scores['val_cosine'] > best['val_cosine']:
                best = {**scores, 'epoch': epoch + 1, 'train_loss': float(np.mean(losses))}
                best_state = {k: v.detach().clone() for k, v in prior.prompts.state_dict().items()}
    prior.prompts.load_state_dict(best_state)
    return best


def augment(clouds: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Return a random PROMPT_POINTS subset, a random yaw about the canonical Y (up) axis and a scale in [0.8, 1.2]."""
    b, g, _ = clouds.shape
    subset = torch.rand(b, g, generator=generator).argsort(dim=1)[:, :PROMPT_POINTS]
    points = clouds[torch.arange(b)[:, None], subset]                               # (b, P, 3)
    yaw = torch.rand(b, generator=generator) * 2 * math.pi
    cos, sin, zero, one = yaw.cos(), yaw.sin(), torch.zeros(b), torch.ones(b)
    rotation = torch.stack([cos, zero, sin, zero, one, zero, -sin, zero, cos], dim=1).view(b, 3, 3)
    scale = 0.8 + 0.4 * torch.rand(b, 1, 1, generator=generator)
    return scale * points @ rotation.transpose(1, 2)


@torch.no_grad()
def _alignment(prior: TextPrior, encoder: PointCloudEncoder, names: tuple[str, ...], clouds: torch.Tensor,
               labels: torch.Tensor, device: torch.device) -> dict:
    """Mean cosine between each validation cloud and its class text, and nearest-text classification accuracy."""
    if not len(clouds):
        return {'val_cosine': 0.0, 'val_accuracy': 0.0}
    prior.eval()
    encoder.eval()
    texts = prior(list(names))                                                        # (C, D) unit norm
    points = torch.nn.functional.normalize(encoder(clouds[:, :PROMPT_POINTS].to(device)), dim=1)
    similarity = points @ texts.T                                                     # (M, C)
    labels = labels.to(device)
    return {'val_cosine': float(similarity.gather(1, labels[:, None]).mean()),
            'val_accuracy': float((similarity.argmax(dim=1) == labels).float().mean())}
