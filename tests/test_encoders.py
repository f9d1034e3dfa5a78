"""Encoders: the report's VGG-16-BN parameter count, shapes, bf16 + channels_last, errors."""

from __future__ import annotations

import pytest
import torch

from reprlab.encoders import (
    DEFAULT_ENCODER,
    ENCODERS,
    build_encoder,
    count_parameters,
    encoder_summary,
)
from reprlab.errors import ReprlabError


def test_vgg16_bn_has_report_parameter_count() -> None:
    model = build_encoder("vgg16_bn", 64)
    assert count_parameters(model) == 16_328_832
    assert model.feature_dim == 512 * 49
    gap = build_encoder("vgg16_bn", 64, head="gap")
    assert count_parameters(gap) == 16_328_832 - 512 * 49 * 64 + 512 * 64


def test_airbench_widths() -> None:
    """airbench is airbench94's 64/256/256 net; the CPU default halves the first two widths."""
    wide, cpu = build_encoder("airbench", 128), build_encoder("airbench_cpu", 128)
    assert [g.conv2.out_channels for g in wide.groups] == [64, 256, 256]
    assert [g.conv2.out_channels for g in cpu.groups] == [32, 128, 256]
    assert count_parameters(wide) == 2_003_128 and count_parameters(cpu) == 1_120_056
    assert DEFAULT_ENCODER == "airbench_cpu" and cpu.feature_dim == wide.feature_dim == 256
    # depth 2 adds no parameters, so encoder files written before depth existed still load
    assert not any(".more." in k for k in wide.state_dict())


def test_airbench_wide_is_airbench96_sized() -> None:
    """airbench_wide: widths 128/384/512 and three convolutions per group, as airbench96."""
    net = build_encoder("airbench_wide", 128)
    assert [g.conv2.out_channels for g in net.groups] == [128, 384, 512]
    assert [1 + 1 + len(g.more) for g in net.groups] == [3, 3, 3]
    assert count_parameters(net) == 9_979_320 and net.feature_dim == 512
    with pytest.raises(ReprlabError, match="depth"):
        build_encoder("airbench", 8, depth=1)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_shapes_and_bf16_channels_last(name: str) -> None:
    torch.manual_seed(0)
    z = 16
    model = build_encoder(name, z)
    assert model.z_dim == z
    x = torch.randn(4, 3, 32, 32)
    model.train()
    y = model(x)
    assert y.shape == (4, z) and y.dtype == torch.float32
    f = model.features(x)
    assert f.shape == (4, model.feature_dim)
    model = model.to(memory_format=torch.channels_last).eval()
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = model(xc)
    assert yb.shape == (4, z)
    assert torch.isfinite(yb.float()).all()
    # bf16 keeps ~3 significant digits: the embeddings must agree with fp32 closely
    cos = torch.nn.functional.cosine_similarity(yb.float(), ref, dim=1)
    assert cos.min() > 0.95


def test_backward_under_autocast() -> None:
    model = build_encoder("airbench", 8).to(memory_format=torch.channels_last)
    x = torch.randn(6, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_whitening_init_whitens_patches() -> None:
    torch.manual_seed(0)
    model = build_encoder("airbench", 8)
    x = torch.randn(32, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5])[None, :, None, None]
    model.init_whitening(x)
    with torch.no_grad():
        out = model.whiten(x)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(out.T)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_grayscale_encoders(name: str) -> None:
    """One-channel images: every encoder takes ``in_channels=1``; airbench's whitening stem then
    has 2 x 4 filters (both signs of the 4 directions of a 2x2 gray patch) and whitens them."""
    torch.manual_seed(0)
    model = build_encoder(name, 8, in_channels=1)
    x = torch.randn(16, 1, 32, 32) * 3.0
    if hasattr(model, "init_whitening"):
        assert model.whiten.out_channels == 8
        model.init_whitening(x)
        with torch.no_grad():
            out = model.whiten(x)[:, :4].permute(0, 2, 3, 1).reshape(-1, 4)
        assert torch.allclose(torch.cov(out.T), torch.eye(4), atol=0.05)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (16, 8)
    with pytest.raises(RuntimeError):  # RGB images do not fit a gray encoder
        model(torch.randn(2, 3, 32, 32))


def test_summary_lists_layers_and_params() -> None:
    text = encoder_summary(build_encoder("vgg16_bn", 64))
    assert "16,328,832" in text
    assert "Conv2d" in text and "Linear" in text


def test_errors_name_the_flag() -> None:
    with pytest.raises(ReprlabError, match="--encoder"):
        build_encoder("resnet9000", 64)
    for bad in (0, -3):
        with pytest.raises(ReprlabError, match="--z_dim"):
            build_encoder("airbench", bad)
    with pytest.raises(ReprlabError, match="--head"):
        build_encoder("vgg16_bn", 64, head="nope")
