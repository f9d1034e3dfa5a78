"""Recipe research harness (not in CI): short training runs of the airbench encoder on the shared
CIFAR-10, judged by kNN@20 on the validation split (and CE accuracy for ``--loss ce``).

It compares the training recipes behind ``cont_rep`` and ``fine_tune_nn`` in one readable loop,
outside the library's modes, so that a recipe can be changed in one line:

* ``--recipe old``: the first release's cont_rep recipe (SGD-Nesterov 0.9, lr 0.1, wd 5e-4 on
  weights, 30 warmup iterations + linear decay, 4-px crop, Kaiming-normal convs, trainable
  BatchNorm scales and whitening stem);
* ``--recipe airbench``: airbench94's (Jordan 2024) at this batch size: Dirac conv init, frozen
  BatchNorm scales and stem (the library's encoder now), lr 11.5 per 1024 examples (x
  ``--lr_mult``), momentum 0.85, decay of 5e-4 of each weight per step, BatchNorm shifts at 64x
  lr, 20 % warmup from 0.2 then linear decay, lookahead, 2-px translate, logits x 1/9 for CE.

Variants of the airbench recipe measured in v13 (none adopted; README, "Tried and not adopted
(v13)"): ``--muon_lr`` (Muon on the convolution filters), ``--epochs`` (permutation batches and
alternating mirrors), ``--momentum`` (lr and decay rescaled to keep the step per example),
``--fp32``.

    .venv/bin/python benchmarks/recipe_proxy.py --recipe airbench --lr_mult 3 --iters 300
    .venv/bin/python benchmarks/recipe_proxy.py --recipe airbench --loss ce
    .venv/bin/python benchmarks/recipe_proxy.py --recipe airbench --lr_mult 3 --iters 600 \\
        --save runs/enc600.pt
    .venv/bin/python benchmarks/recipe_proxy.py --recipe airbench --loss ce --init runs/enc600.pt

Prints one JSON line: the arguments, training seconds, and kNN accuracy of the embedding (z) and
of the pooled features, without and with flip averaging.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reprlab.augment import random_crop_flip
from reprlab.data import Standardizer, load_images, stratified_split, to_float
from reprlab.embed import as_mean_std, embed, knn_accuracy, to_input
from reprlab.encoders import build_encoder
from reprlab.train import EMA, lookahead_decay
from reprlab.triplets import batch_triplet_loss


class Muon(torch.optim.Optimizer):
    """Muon for convolution filters (Jordan 2024): Nesterov momentum, then the update is the
    nearest semi-orthogonal matrix of the flattened filter bank (Newton-Schulz), and the
    weights are kept at norm sqrt(out_channels) (BatchNorm makes them scale-invariant)."""

    def __init__(self, params, lr: float, momentum: float):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("buf", torch.zeros_like(p.grad))
                buf.mul_(g["momentum"]).add_(p.grad)
                d = p.grad.add(buf, alpha=g["momentum"])
                p.mul_(len(p) ** 0.5 / p.norm())
                p.add_(orthogonalize(d.reshape(len(d), -1)).view_as(p), alpha=-g["lr"])


def orthogonalize(G: torch.Tensor, steps: int = 3) -> torch.Tensor:
    """Newton-Schulz iteration towards U V^T of G's SVD (quintic, Jordan's coefficients)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G / (G.norm() + 1e-7)
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def old_style(enc: nn.Module) -> None:
    """Undo the airbench init of the library's encoder: the first release's encoder."""
    for m in enc.modules():
        if isinstance(m, nn.Conv2d) and m is not enc.whiten:
            nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(True)
    enc.whiten.weight.requires_grad_(True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/cifar10/cifar10_train.tar.xz")
    ap.add_argument("--recipe", choices=("old", "airbench"), default="airbench")
    ap.add_argument("--loss", choices=("triplet", "ce"), default="triplet")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--batch_size", type=int, default=256)
    ap.add_argument("--lr_mult", type=float, default=1.0, help="airbench lr multiplier")
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--head", choices=("lin", "mlpz"), default="lin",
                    help="CE head: linear on pooled features, or the report's MLP on z")
    ap.add_argument("--init", help="start from this encoder state_dict (from --save)")
    ap.add_argument("--save", help="save the trained encoder's state_dict here")
    ap.add_argument("--widths", default="64,256,256", help="the encoder's three group widths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--momentum", type=float, default=0.85,
                    help="airbench recipe's Nesterov momentum per step (its lr and decay follow)")
    ap.add_argument("--fp32", action="store_true", help="train in float32 (default: bf16)")
    ap.add_argument("--epochs", action="store_true",
                    help="batches walk a fresh permutation each epoch (no replacement), and each "
                    "image's mirror alternates from epoch to epoch (airbench); else random")
    ap.add_argument("--muon_lr", type=float, default=0.0,
                    help="> 0: the convolution filters use Muon at this lr (the rest SGD)")
    ap.add_argument("--muon_momentum", type=float, default=0.6)
    a = ap.parse_args()
    air = a.recipe == "airbench"
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    ds = load_images(a.data, require_labels=True)
    tr, va = stratified_split(ds.labels, 0.2, 0)
    trs, vas = ds.subset(tr), ds.subset(va)
    mean, std = as_mean_std(*(lambda s: (s.mean_, s.std_))(
        Standardizer().fit(to_float(trs.images[:10000]))))
    mt, st = torch.from_numpy(mean), torch.from_numpy(std)

    enc = build_encoder("airbench", 128, widths=tuple(int(w) for w in a.widths.split(",")))
    if not air:
        old_style(enc)
    enc.init_whitening(to_input(torch.from_numpy(trs.images[:2000]), mt, st, channels_last=False))
    if a.init:
        enc.load_state_dict(torch.load(a.init, weights_only=True))
    head: nn.Module | None = None
    if a.loss == "ce":
        head = (nn.Linear(enc.feature_dim, 10, bias=not air) if a.head == "lin" else
                nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10)))
    model = nn.ModuleList([enc] + ([head] if head is not None else []))
    model.to(memory_format=torch.channels_last)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    if air:  # airbench94's hyperparameters, per example, times the batch (mean loss)
        # a Nesterov step is (1 + 1 / (1 - momentum)) gradients long (airbench's kilostep scale)
        kilostep = 1024 * (1 + 1 / (1 - a.momentum))
        lr = 11.5 / kilostep * a.batch_size * a.lr_mult
        decay = 0.0153 * a.batch_size / kilostep  # per step, = lr x wd
        norm = [p for n, p in named if "norm" in n]
        rest = [p for n, p in named if "norm" not in n]
        groups = [dict(params=norm, lr=64 * lr, weight_decay=decay / (64 * lr)),
                  dict(params=rest, lr=lr, weight_decay=decay / lr)]
        momentum, pad = a.momentum, 2
    else:
        lr = 0.1
        groups = [dict(params=[p for _, p in named if p.ndim > 1], lr=lr, weight_decay=5e-4),
                  dict(params=[p for _, p in named if p.ndim <= 1], lr=lr, weight_decay=0.0)]
        momentum, pad = 0.9, 4
    for g in groups:
        g["base_lr"] = g["lr"]
    muon = None
    if a.muon_lr > 0:
        filters = [p for _, p in named if p.ndim == 4]
        for g in groups:
            g["params"] = [p for p in g["params"] if p.ndim != 4]
        muon = Muon(filters, lr=a.muon_lr, momentum=a.muon_momentum)
        muon.param_groups[0]["base_lr"] = a.muon_lr
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    slow = EMA(model, 0.0) if air else None  # airbench's lookahead, as in train.py

    def lr_factor(it: int) -> float:
        if air:
            return float(np.interp(it, [0, int(0.2 * a.iters), a.iters], [0.2, 1.0, 0.0]))
        return (it + 1) / 30 if it < 30 else 1 - (it - 29) / max(1, a.iters - 30)

    x_all, y_all = torch.from_numpy(trs.images), torch.from_numpy(trs.labels)
    gen = torch.Generator().manual_seed(a.seed)
    base_flip = torch.randint(0, 2, (len(x_all),), generator=gen) if a.epochs else None
    t0 = time.time()
    for it in range(a.iters):
        for g in opt.param_groups + (muon.param_groups if muon else []):
            g["lr"] = g["base_lr"] * lr_factor(it)
        if a.epochs:
            ep, k = divmod(it, len(x_all) // a.batch_size)
            if k == 0:  # one permutation per epoch, drawn from the seed (seed 0: manual_seed(ep))
                epoch_gen = torch.Generator().manual_seed(1_000_003 * a.seed + ep)
                perm = torch.randperm(len(x_all), generator=epoch_gen)
            idx = perm[k * a.batch_size : (k + 1) * a.batch_size]
            x = random_crop_flip(to_input(x_all[idx], mt, st), pad=pad, generator=gen, flip=False)
            mirror = (base_flip[idx] ^ (ep % 2)).bool()
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        else:
            idx = torch.randperm(len(x_all), generator=gen)[: a.batch_size]
            x = random_crop_flip(to_input(x_all[idx], mt, st), pad=pad, generator=gen)
        y = y_all[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not a.fp32):
            if head is None:
                out = enc(x).float()
            else:
                out = head(enc.features(x) if a.head == "lin" else enc(x)).float()
        if head is None:
            loss, _ = batch_triplet_loss(out, y, "all", a.margin, "l2", normalize=True)
        else:
            loss = F.cross_entropy(out * (1 / 9 if air else 1.0), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if muon is not None:
            muon.step()
        if slow is not None and (it + 1) % 5 == 0:
            slow.pull(model, lookahead_decay(it + 1, a.iters))
        if it % 50 == 0:
            print(f"{it} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0
    if slow is not None:
        model.load_state_dict(slow.state)
    if a.save:
        torch.save(enc.state_dict(), a.save)

    class Both(nn.Module):  # one pass gives the embedding and the pooled feature
        def __init__(self) -> None:
            super().__init__()
            self.enc = enc  # a submodule, so that embed() puts it in eval mode

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.enc.features(x)
            return torch.cat([F.normalize(self.enc.fc(f).float(), dim=1),
                              F.normalize(f.float(), dim=1)], 1)

    res: dict = {**vars(a), "train_s": round(train_s, 1)}
    for tta in (False, True):
        e_tr = embed(Both(), trs.images, mean, std, progress=False, flip_tta=tta)
        e_va = embed(Both(), vas.images, mean, std, progress=False, flip_tta=tta)
        for name, sl in (("z", slice(0, 128)), ("feat", slice(128, None))):
            res[f"knn_{name}{'_flip' if tta else ''}"] = knn_accuracy(
                e_tr[:, sl], trs.labels, e_va[:, sl], vas.labels, k=20)
    if head is not None:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            pred = torch.cat([
                head((enc.features if a.head == "lin" else enc)(
                    to_input(torch.from_numpy(vas.images[i:i + 512]), mt, st))).argmax(1)
                for i in range(0, len(vas), 512)])
        res["ce_acc"] = float((pred.numpy() == vas.labels).mean())
    print(json.dumps(res))


if __name__ == "__main__":
    main()
