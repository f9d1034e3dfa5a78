"""Image encoders for contrastive (triplet) representation learning.

Every encoder maps a normalised float batch ``(N, C, H, W)`` (CIFAR-10: ``(N, 3, 32, 32)``; the
channel count is ``in_channels``, any size its pooling allows) to embeddings ``(N, z_dim)`` and
exposes ``z_dim``; encoders with a penultimate feature vector also expose ``feature_dim`` and a
``features(x)`` method (the vector before the last linear layer).

* ``airbench``: a compact airbench94-style net (Jordan, 2024): a 2x2 "whitening" stem, three
  conv blocks of widths 64/256/256 with max-pooling, BatchNorm and GELU, then global max pooling
  and a linear projection to ``z_dim``. About 2 M parameters and ~0.12 G mult-adds per image:
  airbench94's widths, the choice for a GPU.
* ``airbench_cpu`` (default): the same net at widths 32/128/256 (1.1 M parameters, ~44 M
  mult-adds). On a 2-core CPU a step costs about half as much, and in equal training time
  (~350 s) it reaches a better embedding than the wide net: kNN 0.848 after 1300 steps
  against 0.837 after 600 (README, cont_rep recipe research).
* ``vgg16_bn``: the course report's encoder, layer for layer (13 conv3x3+BN+ReLU, 5 max-pools),
  with the report's head (``AdaptiveAvgPool2d(7)`` + ``Linear(512*49, z_dim)``: 16,328,832
  parameters at ``z_dim=64``) or a global-average-pool head (``head="gap"``).

PyTorch only (no torchvision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from reprlab.errors import ReprlabError, first_line

VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG16BN(nn.Module):
    """The report's VGG-16 (with BatchNorm) encoder.

    ``head="report"`` (default) keeps the report's head exactly: the 1x1 map after the fifth pool
    is replicated to 7x7 by ``AdaptiveAvgPool2d(7)`` and flattened into ``Linear(25088, z_dim)``
    (16,328,832 parameters at ``z_dim=64``, the figure the report prints). It is the default
    because ``vgg16_bn`` exists to reproduce the report; ``head="gap"`` (global average pool +
    ``Linear(512, z_dim)``) computes the same function class with 49x fewer head parameters and
    no redundant 7x7 copy, and is the better choice for new runs.
    """

    def __init__(self, z_dim: int, head: str = "report", in_channels: int = 3) -> None:
        super().__init__()
        if head not in ("report", "gap"):
            raise ReprlabError(f"--head must be 'report' or 'gap' for vgg16_bn, got {head!r}")
        layers: list[nn.Module] = []
        c = in_channels
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
                c = int(v)
        self.features_net = nn.Sequential(*layers)
        self.head = head
        self.z_dim = z_dim
        if head == "report":
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((7, 7))
            self.feature_dim = 512 * 7 * 7
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.feature_dim = 512
        self.fc = nn.Linear(self.feature_dim, z_dim)

    def features(self, x: Tensor) -> Tensor:
        """The flattened penultimate feature (25088-d for the report head, 512-d for gap)."""
        return torch.flatten(self.avgpool(self.features_net(x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def _batch_norm(c: int) -> nn.BatchNorm2d:
    """airbench's BatchNorm: fast-moving statistics for short runs (momentum 0.4 in PyTorch's
    convention), and a fixed scale of 1: only the shift is learned. The convolution before it
    is then scale-invariant, so its weight decay sets the effective learning rate."""
    bn = nn.BatchNorm2d(c, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 'same' convolution with airbench's partial identity (Dirac) initialisation: the
    first ``c_in`` filters pass the input through, the rest keep PyTorch's default init."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(c_in, c_out)])
    return conv


class ConvGroup(nn.Module):
    """airbench block: conv -> maxpool(2) -> BN -> GELU, then ``depth - 1`` times
    conv -> BN -> GELU (airbench94: depth 2; airbench96: 3, there with a residual connection
    around the later convolutions, which this block does not have)."""

    def __init__(self, c_in: int, c_out: int, depth: int = 2) -> None:
        super().__init__()
        self.conv1 = _conv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _batch_norm(c_out)
        self.conv2 = _conv(c_out, c_out)
        self.norm2 = _batch_norm(c_out)
        # the third and later convolutions (none at depth 2, so older encoder files load)
        self.more = nn.ModuleList(
            nn.Sequential(_conv(c_out, c_out), _batch_norm(c_out)) for _ in range(depth - 2)
        )
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        x = self.act(self.norm2(self.conv2(x)))
        for conv_norm in self.more:
            x = self.act(conv_norm(x))
        return x


class AirbenchEncoder(nn.Module):
    """airbench94-style encoder: whitening stem + 3 conv groups + global max pool + linear.

    ``widths`` are the three groups' channels (airbench94: 64/256/256); ``whiten_width`` is the
    2x2 stem's channels (default 2 x 4 x ``in_channels``: both signs of every patch-PCA
    direction, 24 for RGB as in airbench). :meth:`init_whitening`
    optionally sets the stem to the ZCA/PCA whitening of 2x2 patches of training images.
    """

    def __init__(
        self,
        z_dim: int,
        widths: Sequence[int] = (64, 256, 256),
        whiten_width: int | None = None,
        in_channels: int = 3,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) <= 0:
            raise ReprlabError(f"--widths must be three positive ints, got {tuple(widths)}")
        if depth < 2:
            raise ReprlabError(f"depth must be at least 2 convolutions per group, got {depth}")
        if whiten_width is None:  # both signs of every 2x2-patch direction: 24 for RGB
            whiten_width = 2 * 4 * in_channels
        self.z_dim = z_dim
        self.feature_dim = int(widths[-1])
        self.whiten = nn.Conv2d(in_channels, whiten_width, 2, padding=0, bias=True)
        self.act = nn.GELU()
        groups = []
        c = whiten_width
        for w in widths:
            groups.append(ConvGroup(c, int(w), depth))
            c = int(w)
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(self.feature_dim, z_dim)
        # airbench: the stem is a fixed whitening filter bank (set by init_whitening); only its
        # bias is learned
        self.whiten.weight.requires_grad_(False)

    @torch.no_grad()
    def init_whitening(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the 2x2 stem to whiten patches of ``images`` (N,3,H,W, normalised): airbench's
        init, where the filters are the eigenvectors of the patch covariance scaled by
        ``1/sqrt(eigenvalue)``, in positive/negative pairs (needs ``whiten_width == 2*4*C``)."""
        c = images.shape[1]
        k = c * 4
        if self.whiten.out_channels != 2 * k:
            raise ReprlabError("init_whitening needs whiten_width == 2 * 4 * in_channels")
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # N,C,H',W',2,2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, k)
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / patches.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        w = (evecs.T / torch.sqrt(evals + eps)[:, None]).reshape(k, c, 2, 2)
        self.whiten.weight.copy_(torch.cat([w, -w], 0).to(self.whiten.weight.dtype))
        self.whiten.bias.zero_()

    def features(self, x: Tensor) -> Tensor:
        """The pooled penultimate feature (``feature_dim`` = last width)."""
        x = self.groups(self.act(self.whiten(x)))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def _vgg16_bn(z_dim: int, head: str = "report", **kw: object) -> nn.Module:
    return VGG16BN(z_dim, head=head, **kw)  # type: ignore[arg-type]


def airbench_at(widths: tuple[int, int, int], depth: int = 2) -> Callable[..., nn.Module]:
    """The factory of an :class:`AirbenchEncoder` whose group widths default to ``widths``
    and convolutions per group to ``depth``."""

    def build(z_dim: int, **kw: object) -> nn.Module:
        kw.setdefault("widths", widths)
        kw.setdefault("depth", depth)
        return AirbenchEncoder(z_dim, **kw)  # type: ignore[arg-type]

    return build


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "airbench": airbench_at((64, 256, 256)),
    "airbench_cpu": airbench_at((32, 128, 256)),
    "airbench_small": airbench_at((32, 128, 128)),
    # airbench96's widths and depth (Jordan 2024), without its residual connections: 9.98 M
    # parameters, ~0.45 G mult-adds per image, for a GPU (on 2 CPU cores a step costs 8.6x
    # airbench_cpu's, README)
    "airbench_wide": airbench_at((128, 384, 512), depth=3),
    "vgg16_bn": _vgg16_bn,
}
DEFAULT_ENCODER = "airbench_cpu"


def build_encoder(name: str, z_dim: int, **kw: object) -> nn.Module:
    """Build encoder ``name`` with output size ``z_dim`` (extra keywords go to its factory)."""
    if name not in ENCODERS:
        raise ReprlabError(f"--encoder must be one of {sorted(ENCODERS)}, got {name!r}")
    if not isinstance(z_dim, int) or isinstance(z_dim, bool) or z_dim <= 0:
        raise ReprlabError(f"--z_dim must be a positive integer, got {z_dim!r}")
    try:
        return ENCODERS[name](z_dim, **kw)
    except TypeError as e:
        raise ReprlabError(f"--encoder {name}: bad option ({e})") from e


def check_input_size(model: nn.Module, shape: Sequence[int], where: str) -> None:
    """Raise :class:`ReprlabError` naming ``where`` if ``model`` cannot embed images of
    ``shape`` (H, W, C), e.g. too small for its pooling layers (one zero image, eval mode)."""
    h, w, c = (int(v) for v in shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, h, w))
    except RuntimeError as e:
        raise ReprlabError(
            f"{where}: images of {h}x{w}x{c} (HxWxC) do not fit the encoder ({first_line(e)})"
        ) from None
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def encoder_summary(model: nn.Module, input_size: Sequence[int] = (1, 3, 32, 32)) -> str:
    """torchinfo table: layers, output shapes, parameters and mult-adds, as a string."""
    from torchinfo import summary

    was_training = model.training
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    stats = summary(
        model,
        input_size=tuple(input_size),
        col_names=("output_size", "num_params", "mult_adds"),
        verbose=0,
        device=device,  # stay where the model is (torchinfo would move it)
    )
    model.train(was_training)
    return str(stats)
