"""Batched, vectorised data augmentation on tensors (any device), seeded by a torch.Generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reprlab.errors import ReprlabError


def _rand_int(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_dev = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_dev).to(device)


def random_crop_flip(
    x: Tensor,
    pad: int = 4,
    generator: torch.Generator | None = None,
    padding_mode: str = "reflect",
    flip: bool = True,
) -> Tensor:
    """Random ``pad``-pixel-translate crop (same size as input) + random horizontal flip.

    ``x`` is ``(N, C, H, W)``; the batch is padded once (``"reflect"`` or ``"zeros"``) and every
    image's window (and mirror, with probability 1/2) is gathered in one indexing operation, no
    Python loop over images. Shape, dtype, device and memory format are kept. Deterministic
    given ``generator``.
    """
    if x.ndim != 4:
        raise ReprlabError(f"random_crop_flip expects (N, C, H, W) images, got {tuple(x.shape)}")
    if padding_mode not in ("reflect", "zeros"):
        raise ReprlabError(f"padding mode must be 'reflect' or 'zeros', got {padding_mode!r}")
    n, c, h, w = x.shape
    if pad < 0 or (padding_mode == "reflect" and pad >= min(h, w)):
        raise ReprlabError(f"crop padding must be in [0, {min(h, w) - 1}], got {pad}")
    dev = x.device
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and c > 1
    if pad > 0:
        mode = "reflect" if padding_mode == "reflect" else "constant"
        xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
        dy = _rand_int(2 * pad + 1, n, generator, dev)
        dx = _rand_int(2 * pad + 1, n, generator, dev)
    else:
        xp = x
        dy = torch.zeros(n, dtype=torch.long, device=dev)
        dx = torch.zeros(n, dtype=torch.long, device=dev)
    if flip:
        mirror = _rand_int(2, n, generator, dev).bool()
    else:
        mirror = torch.zeros(n, dtype=torch.bool, device=dev)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h[None, :]  # (N, H)
    cols = torch.where(mirror[:, None], ar_w.flip(0)[None, :], ar_w[None, :]) + dx[:, None]
    # gather rows then columns: (N, C, H, Wp) -> (N, C, H, W)
    out = torch.gather(xp, 2, rows[:, None, :, None].expand(n, c, h, xp.shape[3]))
    out = torch.gather(out, 3, cols[:, None, None, :].expand(n, c, h, w))
    if channels_last:
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def translate(x: Tensor, dx: int, dy: int) -> Tensor:
    """``x`` (N, C, H, W) shifted by ``dx`` columns and ``dy`` rows (positive: content moves
    left / up), the exposed border filled by reflection; same shape and memory format."""
    p = max(abs(dx), abs(dy))
    if p == 0:
        return x
    h, w = x.shape[2:]
    out = F.pad(x, (p, p, p, p), mode="reflect")[:, :, p + dy : p + dy + h, p + dx : p + dx + w]
    if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1:
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()
