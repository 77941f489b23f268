"""Train MESC-3D (``small``) and the PSGN-style baseline side by side at equal budget on one lent GPU.

Reads the pack made by ``scripts/pack_crops.py`` (the dataset itself cannot travel), keeps every crop on the GPU,
and runs the same model, loss (CD-L1) and optimiser (Adam, warm-up + cosine) as ``mesc3d train``; only the data
path differs: pre-drawn augmented crops instead of on-the-fly ones. Class embeddings come from the shipped model's
3DSPL class table. Writes ``<out>/<arch>.json`` (steps, loss, time, card) and the float16 state dict as
``<out>/<arch>.partN.safetensors``.

    python scripts/gpu_train.py --arch mesc3d --pack build/gpu_pack.npz --steps 8000 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from mesc3d_ros.config import config_from_dict, load_config
from mesc3d_training.baselines import PSGN
from mesc3d_training.losses import reconstruction_loss
from mesc3d_training.model import build_model

PART_BYTES = 12 * 2**20


def load_pack(path: Path, device: torch.device) -> dict:
    pack = np.load(path)
    data, offsets = pack['jpeg_bytes'], pack['jpeg_offsets']
    crops = np.stack([cv2.cvtColor(cv2.imdecode(data[a:b], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                      for a, b in zip(offsets[:-1], offsets[1:])])  # (M, S, S, 3) uint8
    return {
        'crops': torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).contiguous(),  # (M, 3, S, S) uint8
        'rotations': torch.from_numpy(pack['rotations']).to(device),                  # (M, 3, 3) canonical->viewer
        'objects': torch.from_numpy(pack['objects']).long().to(device),               # (M,)
        'clouds': torch.from_numpy(pack['clouds'].astype(np.float32)).to(device),     # (O, P, 3) canonical
        'categories': [str(c) for c in pack['categories']],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', choices=('mesc3d', 'psgn'), required=True)
    parser.add_argument('--pack', type=Path, required=True)
    parser.add_argument('--model', type=Path, default=Path('models/mesc3d_small.yaml'),
                        help='deployable model whose config and class table are used')
    parser.add_argument('--steps', type=int, default=8000)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--deadline-s', type=float, default=1e9, help='stop early (and say so) after this long')
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    card = yaml.safe_load(args.model.read_text())
    cfg = config_from_dict(card['config'])
    table = {entry['name']: entry['embedding'] for entry in card['classes']}
    pack = load_pack(args.pack, device)
    embeddings = torch.tensor([table[c] for c in pack['categories']], dtype=torch.float32, device=device)  # (M, D)
    model = (build_model(cfg.model) if args.arch == 'mesc3d' else PSGN(cfg.model)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=cfg.train.adam_eps)
    warmup = max(1, args.steps // 50)

    def lr_at(step: int) -> float:  # linear warm-up from warmup_lr, then cosine to min_lr (as schedule.py)
        if step < warmup:
            return cfg.train.warmup_lr + (args.lr - cfg.train.warmup_lr) * step / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return cfg.train.min_lr + 0.5 * (args.lr - cfg.train.min_lr) * (1 + math.cos(math.pi * progress))

    num_gt = cfg.data.num_gt_points
    start, losses, steps_done = time.time(), [], 0
    for step in range(args.steps):
        if time.time() - start > args.deadline_s:
            break
        for group in optimizer.param_groups:
            group['lr'] = lr_at(step)
        idx = torch.randint(len(pack['objects']), (args.batch_size,), device=device)
        image = pack['crops'][idx].float() / 255.0                                    # (B, 3, S, S) in [0, 1]
        subset = torch.randint(pack['clouds'].shape[1], (args.batch_size, num_gt), device=device)
        canonical = torch.gather(pack['clouds'][pack['objects'][idx]], 1, subset[..., None].expand(-1, -1, 3))
        gt = canonical @ pack['rotations'][idx].transpose(1, 2)                       # (B, G, 3) viewer frame
        loss = reconstruction_loss(model(image, embeddings[idx]), gt, cfg.train.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())  # no .item() per step: it would stall the GPU pipeline
        steps_done += 1
        if step % 500 == 0:
            print(f'{args.arch} step {step} loss {loss.item():.4f} {time.time() - start:.0f}s', flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    # float16 like the shipped model; split into parts because files coming back from the GPU machine are
    # limited to 16 MiB each.
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    parts, part, size = [], {}, 0
    for key, tensor in state.items():
        if part and size + tensor.numel() * tensor.element_size() > PART_BYTES:
            parts.append(part)
            part, size = {}, 0
        part[key] = tensor
        size += tensor.numel() * tensor.element_size()
    parts.append(part)
    for i, part in enumerate(parts):
        save_file(part, str(args.out / f'{args.arch}.part{i}.safetensors'))
    report = {'arch': args.arch, 'steps': steps_done, 'planned_steps': args.steps, 'batch_size': args.batch_size,
              'samples': steps_done * args.batch_size, 'lr': args.lr, 'wall_s': time.time() - start,
              'final_loss_mean_last_500': float(torch.stack(losses[-500:]).mean()), 'device': torch.cuda.get_device_name()
              if device.type == 'cuda' else 'cpu', 'torch': torch.__version__, 'pack_samples': len(pack['objects'])}
    (args.out / f'{args.arch}.json').write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
