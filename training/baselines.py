"""
``mesc3d baselines CONFIG``: our model, three baselines and two ablations, one comparison table.

Every entry sees the same data, the same budget (``cfg.train``: epochs, steps per epoch, batch, schedule, seed) and
the same evaluation (``evaluate.py``) on the validation, test, unseen-collection and zero-shot splits:

- ``mesc3d``: the model of the config (``train.py``, 3DSPL stage included; its class table is reused below).
- ``psgn``: PSGN-style direct regression, the same image encoder (:class:`ImageEncoder`, same tokens) -> MLP ->
  N × 3 with tanh, trained with the same loss and loop (``loop.fit``). The image only: no class embedding.
- ``retrieval``: nearest neighbour. Each test image is embedded with the *trained psgn encoder* (the flattened
  image tokens, cosine similarity) and answered with the ground-truth cloud of the closest training view, from a
  bank of ``RETRIEVAL_VIEWS`` views per training object. It needs no training of its own beyond psgn's.
- ``class_mean``: per-class mean shape: the medoid training cloud of the image's class (no image at all).
- ``no_esm``: ours with ``use_selection_maps: false``; ``no_prior``: ours with ``use_class_prior: false``.

Output in ``--out``: one folder per entry (training run + ``eval_<split>/``), ``comparison.md`` and
``comparison.json``. Re-running the command skips finished entries and their evaluations and resumes interrupted
ones, so the table is always reproduced by this one command (``--entries`` adds entries to a finished run).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from mesc3d_ros.config import Config, ModelConfig, save_config
from mesc3d_ros.contract import write_atomic
from mesc3d_training.checkpoint import load_model, load_weights
from mesc3d_training.data.categories import UNSEEN_SPLIT, ZERO_SHOT_SPLIT
from mesc3d_training.data.dataset import ReconstructionDataset
from mesc3d_training.distributed import Distributed, init_distributed
from mesc3d_training.evaluate import evaluate_model, metric_table
from mesc3d_training.loop import BEST_STEM, CHECKPOINT_DIR, fit
from mesc3d_training.metrics import chamfer_l1, nearest_squared_distances
from mesc3d_training.model.image_encoder import ImageEncoder
from mesc3d_training.prompt_learning import TABLE_FILE, ClassTable
from mesc3d_training.train import MODEL_STEM, add_config_arguments, config_from_arguments, train
from mesc3d_training.train_checkpoint import has_train_checkpoint

log = logging.getLogger(__name__)

ENTRIES = ('mesc3d', 'psgn', 'retrieval', 'class_mean', 'no_esm', 'no_prior')
DESCRIPTIONS = {
    'mesc3d': 'MESC-3D (ours): MIT + ESM decoder + 3DSPL class prior',
    'psgn': 'PSGN-style: same image encoder -> MLP -> N×3',
    'retrieval': 'retrieval: nearest training view by psgn image feature',
    'class_mean': 'per-class mean shape: the class medoid training cloud',
    'no_esm': 'ours without ESM selection maps',
    'no_prior': 'ours without the 3DSPL class prior',
}
EVAL_SPLITS = ('val', 'test')
PSGN_HIDDEN = (1024, 1024)
"""Hidden widths of the PSGN MLP head: its parameter count is in the range of our small decoder's."""
RETRIEVAL_VIEWS = 4
"""Views per training object in the retrieval bank (views 0..3): more views, more poses to match in viewer frame."""
MEDOID_CANDIDATES = 48
"""Training objects per class among which the per-class mean shape (medoid) is chosen: O(M²) Chamfer distances."""
RESULT_FILE = 'result.json'


class PSGN(nn.Module):
    """Direct regression (Fan et al., CVPR 2017, fully connected branch): image -> MLP -> N × 3 in (-1, 1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_points = cfg.num_points
        self.image_encoder = ImageEncoder(cfg)
        widths = (cfg.num_tokens * cfg.token_dim, *PSGN_HIDDEN)
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(c_in, c_out), nn.ReLU()]
        self.head = nn.Sequential(*layers, nn.Linear(widths[-1], cfg.num_points * 3))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, T·D) the flattened image tokens."""
        return self.image_encoder(image).flatten(1)

    def forward(self, image: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """Map image (B, 3, H, W) in [0, 1] to (B, N, 3); class_embedding is ignored (PSGN sees the image only)."""
        return self.from_trunk(self.image_encoder.trunk_features(image), class_embedding)

    def from_trunk(self, trunk_features: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """Run the graph after the image trunk, as ``MESC3D.from_trunk`` (the cached recipe trains this part)."""
        tokens = self.image_encoder.tokens(trunk_features).flatten(1)              # (B, T·D)
        return torch.tanh(self.head(tokens)).view(-1, self.num_points, 3)


class Retrieval(nn.Module):
    """Answers each image with the ground-truth cloud of the most similar bank image (cosine of features)."""

    def __init__(self, encoder: PSGN, bank_features: torch.Tensor, bank_points: torch.Tensor):
        super().__init__()
        self.encoder = encoder
        self.register_buffer('bank_features', F.normalize(bank_features, dim=1))   # (M, F)
        self.register_buffer('bank_points', bank_points)                           # (M, N, 3)

    def forward(self, image: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        query = F.normalize(self.encoder.features(image), dim=1)                     # (B, F)
        return self.bank_points[(query @ self.bank_features.T).argmax(dim=1)]       # (B, N, 3)


class ClassMedoid(nn.Module):
    """
    Per-class mean shape: answers every image with its class's medoid training cloud.

    The class is read from the class embedding: nearest row of the class table, so an unseen name gets the closest
    seen class's shape.
    """

    def __init__(self, class_embeddings: torch.Tensor, class_points: torch.Tensor):
        super().__init__()
        self.register_buffer('class_embeddings', F.normalize(class_embeddings, dim=1))   # (K, text_dim)
        self.register_buffer('class_points', class_points)                               # (K, N, 3)

    def forward(self, image: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        similarity = F.normalize(class_embedding, dim=1) @ self.class_embeddings.T         # (B, K)
        return self.class_points[similarity.argmax(dim=1)]                                 # (B, N, 3)


@torch.no_grad()
def build_class_medoid(cfg: Config, table: ClassTable) -> ClassMedoid:
    """
    Build the per-class medoid answerer.

    Per training class, the cloud (evaluation crop of one view per object, output frame) with the least mean CD-L1
    to the class's other clouds, from up to ``MEDOID_CANDIDATES`` objects.
    """
    bank_cfg = replace(cfg.data, eval_views=1, num_gt_points=cfg.model.num_points)
    bank = ReconstructionDataset(bank_cfg, 'train', cfg.model.image_size, train=False)
    by_class: dict[str, list[torch.Tensor]] = {}
    for item in (bank[i] for i in range(len(bank))):
        members = by_class.setdefault(item['category'], [])
        if len(members) < MEDOID_CANDIDATES:
            members.append(item['points'])
    names, medoids = sorted(by_class), []
    for name in names:
        clouds = torch.stack(by_class[name])                                               # (M, N, 3)
        cost = torch.stack([chamfer_l1(nearest_squared_distances(clouds, cloud.expand_as(clouds)))
                            for cloud in clouds])                                          # (M, M)
        medoids.append(clouds[cost.mean(dim=1).argmin()])
    log.info('class medoids: %d classes', len(names))
    return ClassMedoid(table.embeddings_for(names), torch.stack(medoids))


@torch.no_grad()
def build_retrieval(psgn: PSGN, cfg: Config, batch_size: int) -> Retrieval:
    """Bank of the training split (RETRIEVAL_VIEWS views per object, evaluation crops, seeded GT subsets)."""
    bank_cfg = replace(cfg.data, eval_views=RETRIEVAL_VIEWS, num_gt_points=cfg.model.num_points)
    bank = ReconstructionDataset(bank_cfg, 'train', cfg.model.image_size, train=False)
    psgn.eval()
    features, points = [], []
    for batch in DataLoader(bank, batch_size=batch_size, num_workers=cfg.train.num_workers):
        features.append(psgn.features(batch['image']))
        points.append(batch['points'])
    log.info('retrieval bank: %d training views', len(bank))
    return Retrieval(psgn, torch.cat(features), torch.cat(points))


def entry_config(cfg: Config, entry: str) -> Config:
    if entry == 'no_esm':
        return replace(cfg, model=replace(cfg.model, name=f'{cfg.model.name}_no_esm', use_selection_maps=False))
    if entry == 'no_prior':
        return replace(cfg, model=replace(cfg.model, name=f'{cfg.model.name}_no_prior', use_class_prior=False))
    return cfg


def run_baselines(cfg: Config, out_dir: Path, batch_size: int = 16, entries: tuple[str, ...] = ENTRIES) -> Path:
    """
    Train what is not trained yet, evaluate ``entries``, write comparison.md/json; return comparison.md.

    Entries run in ENTRIES order: ``mesc3d`` always (its class table serves the others), ``retrieval`` brings
    ``psgn``.
    """
    unknown = sorted(set(entries) - set(ENTRIES))
    if unknown:
        raise ValueError(f'unknown entries {unknown}; choose from {list(ENTRIES)}')
    wanted = {'mesc3d', *entries, *(['psgn'] if 'retrieval' in entries else [])}
    ctx = init_distributed()
    if ctx.world_size > 1:
        raise RuntimeError('mesc3d baselines runs in one process; launch it without torchrun')
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / 'config.yaml')
    reports, results = {}, {}
    psgn = table_of_ours = None   # set by the 'psgn' and 'mesc3d' entries, which come first in ENTRIES
    for entry in (e for e in ENTRIES if e in wanted):
        run = out_dir / entry
        if entry == 'class_mean':
            model, table = build_class_medoid(cfg, table_of_ours), table_of_ours
            results[entry] = {'best_epoch': 0, 'samples_per_s': 0, 'wall_s': 0.0}
        elif entry == 'retrieval':
            model, table = build_retrieval(psgn, cfg, batch_size), table_of_ours
            results[entry] = results['psgn']
        elif entry == 'psgn':
            torch.manual_seed(cfg.train.seed)
            psgn = PSGN(cfg.model)
            results[entry] = _train_once(run, lambda: _fit_psgn(psgn, cfg, run, table_of_ours, ctx))
            load_weights(run / BEST_STEM, psgn)
            model, table = psgn, table_of_ours
        else:
            entry_cfg = entry_config(cfg, entry)
            # One 3DSPL stage for all: the ablations reuse ours (its class table and prompts).
            stage_a = None if entry == 'mesc3d' else out_dir / 'mesc3d'
            results[entry] = _train_once(run, lambda: _train_ours(entry_cfg, run, stage_a))
            loaded = load_model(run / f'{MODEL_STEM}.yaml')
            model, table = loaded.model, ClassTable(loaded.classes, loaded.generic_class, {})
            if entry == 'mesc3d':
                table_of_ours = ClassTable.load(run / TABLE_FILE, cfg.model.text_dim)
        reports[entry] = {split: _evaluate_once(model, table, entry_config(cfg, entry), split, run / f'eval_{split}',
                                                entry, batch_size)
                          for split in EVAL_SPLITS}
    comparison = comparison_rows(reports, results)
    write_atomic(out_dir / 'comparison.json', json.dumps(comparison, indent=1).encode())
    path = write_atomic(out_dir / 'comparison.md', comparison_markdown(comparison, cfg).encode())
    log.info('comparison table: %s', path)
    return path


def _train_once(run: Path, train_entry) -> dict:
    """Run ``train_entry`` unless ``run`` already finished (result.json); resumes a checkpointed run."""
    done = run / RESULT_FILE
    if done.is_file():
        log.info('%s: already trained, reusing it', run)
        return json.loads(done.read_text())
    started = time.perf_counter()
    result = train_entry()
    result['wall_s'] = round(time.perf_counter() - started, 1)
    write_atomic(done, json.dumps(result, indent=1).encode())
    return result


def _evaluate_once(model: nn.Module, table: ClassTable, cfg: Config, split: str, out: Path, entry: str,
                   batch_size: int) -> dict:
    """Return the entry's report on ``split``: a previous run's (evaluation is deterministic), else a new one."""
    done = out / 'metrics.json'
    if done.is_file():
        return json.loads(done.read_text())
    return evaluate_model(model, table, cfg, split, out, name=entry, batch_size=batch_size,
                          zero_shot=split == 'test')


def _train_ours(cfg: Config, run: Path, class_table_run: Path | None) -> dict:
    model_yaml = train(cfg, run, resume=has_train_checkpoint(run / CHECKPOINT_DIR), class_table_run=class_table_run)
    metrics = load_model(model_yaml).metrics
    return {'best_epoch': metrics['best_epoch'], 'samples_per_s': metrics['train_samples_per_s']}


def _fit_psgn(psgn: PSGN, cfg: Config, run: Path, table: ClassTable, ctx: Distributed) -> dict:
    run.mkdir(parents=True, exist_ok=True)
    result = fit(psgn, cfg, run, table, resume=has_train_checkpoint(run / CHECKPOINT_DIR), ctx=ctx)
    return {'best_epoch': result.best_epoch, 'samples_per_s': round(result.samples_per_s, 2)}


def comparison_rows(reports: dict, results: dict) -> dict:
    """{'rows': [...]} one row per (entry, split) with the mean metrics, plus training facts per entry."""
    rows = []
    for entry, by_split in reports.items():
        for split in (*EVAL_SPLITS, UNSEEN_SPLIT, ZERO_SHOT_SPLIT):
            # unseen and zero_shot are scored beside test (evaluate.companion_splits), inside its report.
            report = by_split.get(split if split not in (UNSEEN_SPLIT, ZERO_SHOT_SPLIT) else 'test', {})
            if split in report:
                rows.append({'entry': entry, 'split': split, 'num_samples': report[split]['num_samples'],
                             **report[split]['mean']})
    return {'rows': rows, 'training': results}


def comparison_markdown(comparison: dict, cfg: Config) -> str:
    rows = comparison['rows']
    tc = cfg.train
    lines = ['# Comparison at equal budget', '',
             f'Config `{cfg.model.name}`, data `{cfg.data.root}` (`{cfg.data.frame}` frame), {tc.epochs} epochs × '
             f'{tc.max_steps_per_epoch or "all"} steps of batch {tc.batch_size}, seed {tc.seed}. Means over samples; '
             'F@0.1 (paper) = F-score at squared distance < 0.01, F@1% = at Euclidean distance < 0.01 (unit ball). '
             'Produced by `mesc3d baselines`.', '']
    for split in (*EVAL_SPLITS, UNSEEN_SPLIT, ZERO_SHOT_SPLIT):
        split_rows = [r for r in rows if r['split'] == split]
        if not split_rows:
            continue
        lines += [f'## `{split}`', '', metric_table(
            [(DESCRIPTIONS[r['entry']], r['num_samples'], r) for r in split_rows], first_column='method'), '']
    test = {r['entry']: r for r in rows if r['split'] == 'test'}
    if {'mesc3d', 'psgn', 'retrieval'} <= set(test):
        ours, psgn, retrieval = test['mesc3d'], test['psgn'], test['retrieval']
        ratio = ours['cd_l1'] / psgn['cd_l1']
        best_other_f = max(psgn['fscore_paper'], retrieval['fscore_paper'])
        lines += ['## Quality bar (test split)', '',
                  f'- CD-L1 ours / PSGN-style = {ratio:.3f} (bar: ≤ 0.90): {"met" if ratio <= 0.9 else "NOT met"}',
                  f'- CD-L1 ours {ours["cd_l1"]:.4f} vs retrieval {retrieval["cd_l1"]:.4f}: '
                  f'{"met" if ours["cd_l1"] < retrieval["cd_l1"] else "NOT met"}',
                  f'- F@0.1 ours {ours["fscore_paper"]:.3f} vs PSGN-style {psgn["fscore_paper"]:.3f}, retrieval '
                  f'{retrieval["fscore_paper"]:.3f}: '
                  f'{"met" if ours["fscore_paper"] > best_other_f else "NOT met"}',
                  '']
    lines += ['## Training', '', '| entry | best epoch (val CD-L1) | samples/s | wall (min) |', '|---|---:|---:|---:|']
    for entry, result in comparison['training'].items():
        wall = "(psgn's)" if entry == 'retrieval' else f'{result["wall_s"] / 60:.1f}'
        lines.append(f'| {entry} | {result["best_epoch"]} | {result["samples_per_s"]} | {wall} |')
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mesc3d baselines', description=__doc__.strip().splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument('--out', type=Path, help='output folder (default runs/<model name>_baselines)')
    parser.add_argument('--eval-batch-size', type=int, default=16)
    parser.add_argument('--entries', default=','.join(ENTRIES),
                        help=f'comma-separated subset of {",".join(ENTRIES)} (mesc3d always runs)')
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    run_baselines(cfg, args.out or Path('runs') / f'{cfg.model.name}_baselines', args.eval_batch_size,
                  tuple(e for e in args.entries.split(',') if e))
    return 0
