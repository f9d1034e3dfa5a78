"""A corpus of malformed inputs for every reprlab entry point (data, checkpoints, configs, flags).

Each :class:`BadInput` builds its files inside a fresh folder and returns the command line that
must fail cleanly: exit code 2, exactly one line ``reprlab: error: ...`` on stderr naming the
file or flag (``expect``), no traceback, and the ``--out`` folder untouched.

    from badinputs import CORPUS
    for case in CORPUS:
        argv = case.build(tmp_path)      # files under tmp_path, --out tmp_path / "out"

The pickles with a code payload (:class:`Payload`) would create ``MARKER`` in their folder if
anything ever unpickled them without restriction; the tests check that it never appears.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fixtures_data import (
    cifar_batch,
    cifar_meta,
    image_folder_files,
    random_images,
    write_dir,
    write_tar,
)

MARKER = "MARKER"


class Payload:
    """Unpickling this runs ``touch <folder>/MARKER`` (the attack the loaders must refuse)."""

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.folder}/{MARKER}",))


def payload_pickle(folder: Path, protocol: int = 2) -> bytes:
    return pickle.dumps(Payload(folder), protocol=protocol)


@dataclass(frozen=True)
class BadInput:
    name: str
    entry: str  # the command it exercises
    build: Callable[[Path], list[str]]  # files under root -> argv (with --out root/"out")
    expect: tuple[str, ...]  # substrings the one-line message must contain (file / flag + what)
    payload: bool = False  # a pickle whose unpickling would create root/MARKER


# ---------------------------------------------------------------------------------------------
# Good files the bad cases start from
# ---------------------------------------------------------------------------------------------


def good_npz(root: Path, n: int = 40, k: int = 4, size: int = 8) -> Path:
    """A small valid labelled .npz (n images size x size x 3, labels 0..k-1)."""
    p = root / "good.npz"
    if not p.exists():
        np.savez(p, images=random_images(n, size, size), labels=np.arange(n) % k)
    return p


def good_npz32(root: Path) -> Path:
    """:func:`good_npz` of 32x32 images (in root/d32), the size the encoders take."""
    (root / "d32").mkdir(exist_ok=True)
    return good_npz(root / "d32", size=32)


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write(root: Path, name: str, data: bytes) -> Path:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def bomb_npz(root: Path) -> Path:
    """A ~300-byte .npz whose ``images`` header claims a 3 TB array."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000, 1000, 1000, 3), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 16
    p = root / "bomb.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", npy)
        zf.writestr("labels.npy", npz_member(np.arange(4)))
    return p


def npz_member(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def payload_npz(root: Path) -> Path:
    """An .npz whose ``images`` is an object array holding a code payload (numpy pickles it)."""
    arr = np.empty(2, dtype=object)
    arr[0] = Payload(root)
    arr[1] = Payload(root)
    p = root / "payload.npz"
    np.savez(p, images=arr, labels=np.arange(2))
    return p


def cifar_dir_with(root: Path, batch1: bytes) -> Path:
    """A cifar-10-batches-py folder whose data_batch_1 is ``batch1`` (the rest valid)."""
    d = root / "cifar-10-batches-py"
    write(d, "data_batch_1", batch1)
    for i in range(2, 6):
        write(d, f"data_batch_{i}", cifar_batch(4, seed=i)[0])
    write(d, "batches.meta", cifar_meta(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]))
    return d


def encoder_file(root: Path, name: str = "airbench_small", z_dim: int = 8, tag: str = "") -> Path:
    """A real ``encoder.pt`` as cont_rep writes it (random weights); ``tag`` renames the arch."""
    import torch

    from reprlab.contrastive import save_encoder
    from reprlab.encoders import build_encoder

    torch.manual_seed(0)
    enc = build_encoder(name, z_dim)
    p = root / f"encoder_{name}_{z_dim}{tag}.pt"
    save_encoder(p, enc, name, z_dim, {}, np.zeros(3), np.ones(3), list("abcd"), (32, 32, 3))
    if tag:  # same weights, another architecture's name: the state dict does not fit
        ck = torch.load(p, weights_only=True)
        ck["encoder"] = tag
        torch.save(ck, p)
    return p


def tampered_encoder(root: Path, **changes: object) -> Path:
    """A real ``encoder.pt`` whose metadata was edited by hand (``changes``)."""
    import torch

    p = encoder_file(root)
    ck = torch.load(p, weights_only=True)
    ck.update(changes)
    out = root / f"tampered_{'_'.join(changes)}.pt"
    torch.save(ck, out)
    return out


def torch_payload(root: Path, name: str = "evil.pt") -> Path:
    """``torch.save`` of a dict holding an object whose unpickling runs code."""
    import torch

    p = root / name
    torch.save({"format": "reprlab-encoder", "state_dict": Payload(root)}, p)
    return p


def _noise(n: int) -> bytes:
    """Incompressible bytes, so that a cut in the archive falls inside this member."""
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def truncated(p: Path, keep: float = 0.5) -> Path:
    data = p.read_bytes()
    p.write_bytes(data[: max(1, int(len(data) * keep))])
    return p


def toml(root: Path, text: str) -> Path:
    return write(root, "config.toml", text.encode())


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


def _out(root: Path) -> list[str]:
    return ["--out", str(root / "out")]


def _mode(mode: str, data: Callable[[Path], Path], *flags: str) -> Callable[[Path], list[str]]:
    """``reprlab <mode> --data <built file> <flags> --out root/out``."""

    def build(root: Path) -> list[str]:
        return [mode, "--data", str(data(root)), *flags, *_out(root)]

    return build


def _flags(mode: str, *flags: str, data: bool = True) -> Callable[[Path], list[str]]:
    """``reprlab <mode> [--data good.npz] <flags> --out root/out``."""

    def build(root: Path) -> list[str]:
        d = ["--data", str(good_npz(root))] if data else []
        return [mode, *d, *flags, *_out(root)]

    return build


def _cont(*flags: str, extra: Callable[[Path], list[str]] | None = None):
    """A cont_rep command on the good .npz with tiny sizes plus ``flags`` / ``extra(root)``."""

    def build(root: Path) -> list[str]:
        more = extra(root) if extra else []
        tiny = ["--encoder", "airbench_small", "--batch_size", "8", "--num_iters", "2"]
        return ["cont_rep", "--data", str(good_npz(root)), *tiny, *flags, *more, *_out(root)]

    return build


def _pipeline(make: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        return ["pipeline", "--data", str(good_npz(root)), *make(root), *_out(root)]

    return build


def _sweep(mode: str, *flags: str) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        return ["sweep", mode, "--data", str(good_npz(root)), *flags, *_out(root)]

    return build


def _tar_members(root: Path, name: str, extra: dict[str, bytes]) -> Path:
    files, _, _ = image_folder_files(per_class=3, prefix="train/")
    return write_tar(root / name, {**files, **extra})


def _cifar_bad(obj: object) -> Callable[[Path], Path]:
    return lambda root: cifar_dir_with(root, pickle.dumps(obj, protocol=2))


_DATA: list[BadInput] = [
    # --- .npz -------------------------------------------------------------------------------
    BadInput("npz_truncated", "softmax",
             _mode("softmax", lambda r: truncated(write(r, "t.npz", npz_bytes(
                 images=random_images(40), labels=np.arange(40) % 4)))),
             ("t.npz",)),
    BadInput("npz_not_zip", "softmax",
             _mode("softmax", lambda r: write(r, "garbage.npz", os.urandom(2000))),
             ("garbage.npz", "not a readable .npz")),
    BadInput("npz_zero_bytes", "logistic",
             _mode("logistic", lambda r: write(r, "empty.npz", b"")), ("empty.npz",)),
    BadInput("npz_wrong_dtype", "softmax",
             _mode("softmax", lambda r: write(r, "f.npz", npz_bytes(
                 images=random_images(40).astype(np.float32), labels=np.arange(40) % 4))),
             ("f.npz", "dtype")),
    BadInput("npz_nan_float_images", "softmax",
             _mode("softmax", lambda r: write(r, "nan.npz", npz_bytes(
                 images=np.full((40, 8, 8, 3), np.nan, np.float32), labels=np.arange(40) % 4))),
             ("nan.npz", "dtype")),
    BadInput("npz_wrong_rank", "softmax",
             _mode("softmax", lambda r: write(r, "rank.npz", npz_bytes(
                 images=random_images(40).reshape(40, -1), labels=np.arange(40) % 4))),
             ("rank.npz", "shape")),
    BadInput("npz_wrong_channels", "softmax",
             _mode("softmax", lambda r: write(r, "ch.npz", npz_bytes(
                 images=random_images(40, c=5), labels=np.arange(40) % 4))),
             ("ch.npz", "channels")),
    BadInput("npz_zero_size_images", "softmax",
             _mode("softmax", lambda r: write(r, "zs.npz", npz_bytes(
                 images=np.zeros((40, 0, 8, 3), np.uint8), labels=np.arange(40) % 4))),
             ("zs.npz", "size")),
    BadInput("npz_no_images", "softmax",
             _mode("softmax", lambda r: write(r, "noimg.npz", npz_bytes(
                 pictures=random_images(4), labels=np.arange(4)))),
             ("noimg.npz", "images")),
    BadInput("npz_empty", "softmax",
             _mode("softmax", lambda r: write(r, "none.npz", npz_bytes(
                 images=np.zeros((0, 8, 8, 3), np.uint8), labels=np.zeros(0, np.int64)))),
             ("none.npz", "no images")),
    BadInput("npz_labels_out_of_range", "softmax",
             _mode("softmax", lambda r: write(r, "oor.npz", npz_bytes(
                 images=random_images(40), labels=np.arange(40) % 4 + 5,
                 classes=np.array(["a", "b", "c", "d"])))),
             ("oor.npz", "out of range")),
    BadInput("npz_label_huge_unnamed", "softmax",
             _mode("softmax", lambda r: write(r, "huge.npz", npz_bytes(
                 images=random_images(40), labels=np.r_[np.arange(39) % 4, 3_000_000]))),
             ("huge.npz", "3000000", "class indices")),
    BadInput("npz_class_names_repeated", "softmax",
             _mode("softmax", lambda r: write(r, "dup.npz", npz_bytes(
                 images=random_images(40), labels=np.arange(40) % 4,
                 classes=np.array(["cat", "dog", "cat", "ship"])))),
             ("dup.npz", "'cat'", "more than once")),
    BadInput("npz_class_name_empty", "softmax",
             _mode("softmax", lambda r: write(r, "empty_name.npz", npz_bytes(
                 images=random_images(40), labels=np.arange(40) % 4,
                 classes=np.array(["cat", "", "ship", "dog"])))),
             ("empty_name.npz", "empty class name")),
    BadInput("npz_labels_negative", "softmax",
             _mode("softmax", lambda r: write(r, "neg.npz", npz_bytes(
                 images=random_images(40), labels=np.arange(40) % 4 - 1))),
             ("neg.npz", "negative")),
    BadInput("npz_labels_length", "softmax",
             _mode("softmax", lambda r: write(r, "len.npz", npz_bytes(
                 images=random_images(40), labels=np.arange(39) % 4))),
             ("len.npz", "labels")),
    BadInput("npz_labels_float", "softmax",
             _mode("softmax", lambda r: write(r, "lf.npz", npz_bytes(
                 images=random_images(40), labels=(np.arange(40) % 4).astype(float)))),
             ("lf.npz", "dtype")),
    BadInput("npz_unlabelled_for_training", "softmax",
             _mode("softmax", lambda r: write(r, "nolab.npz", npz_bytes(
                 images=random_images(40)))),
             ("nolab.npz", "no labels")),
    BadInput("npz_bomb_header", "softmax", _mode("softmax", bomb_npz), ("bomb.npz", "GiB")),
    BadInput("npz_object_payload", "softmax", _mode("softmax", payload_npz),
             ("payload.npz", "objects"), payload=True),
    BadInput("npz_one_class", "softmax",
             _mode("softmax", lambda r: write(r, "one.npz", npz_bytes(
                 images=random_images(40), labels=np.zeros(40, np.int64)))),
             ("one.npz", "class")),
    # --- image folders and tars -------------------------------------------------------------
    BadInput("folder_text_as_jpg", "softmax",
             _mode("softmax", lambda r: write_dir(r / "imgs", {
                 **image_folder_files()[0], "dog/9999.jpg": b"this is not a jpeg\n"})),
             ("9999.jpg", "not a readable image")),
    BadInput("folder_empty", "softmax",
             _mode("softmax", lambda r: (r / "emptydir").mkdir() or r / "emptydir"),
             ("emptydir", "no images")),
    BadInput("folder_mixed_sizes", "softmax",
             _mode("softmax", lambda r: write_dir(r / "mixed", {
                 **image_folder_files()[0],
                 **{k.replace("/", "/big"): v
                    for k, v in image_folder_files(size=9, classes=["cat"])[0].items()}})),
             ("mixed", "size")),
    BadInput("tar_member_dotdot", "softmax",
             _mode("softmax", lambda r: _tar_members(r, "dotdot.tar", {"../evil.jpg": b"x"})),
             ("dotdot.tar", "escapes")),
    BadInput("tar_member_absolute", "softmax",
             _mode("softmax", lambda r: _tar_members(r, "abs.tar", {"/tmp/evil.jpg": b"x"})),
             ("abs.tar", "escapes")),
    BadInput("tar_truncated", "softmax",
             _mode("softmax", lambda r: truncated(_tar_members(r, "trunc.tar.gz", {}), 0.6)),
             ("trunc.tar.gz",)),
    # cut inside a member (an interrupted download): the reader fails mid-file, not mid-header
    *(BadInput(f"tar_cut_in_member_{ext}", "softmax",
               _mode("softmax", lambda r, ext=ext: truncated(_tar_members(
                   r, f"cut.tar.{ext}", {"train/cat/big.png": _noise(1_000_000)}), 0.5)),
               (f"cut.tar.{ext}", "corrupt or truncated"))
      for ext in ("xz", "gz")),
    BadInput("tar_not_a_tar", "softmax",
             _mode("softmax", lambda r: write(r, "fake.tar.gz", gzip.compress(b"hello" * 99))),
             ("fake.tar.gz",)),
    BadInput("tar_text_as_png", "softmax",
             _mode("softmax", lambda r: _tar_members(r, "txt.tar", {
                 "train/cat/bad.png": b"<html>not a png</html>"})),
             ("bad.png", "not a readable image")),
    # --- CIFAR-10 python batches ------------------------------------------------------------
    BadInput("cifar_wrong_keys", "softmax",
             _mode("softmax", _cifar_bad({b"pixels": np.zeros((4, 3072), np.uint8)})),
             ("data_batch_1", "CIFAR batch")),
    BadInput("cifar_wrong_shape", "softmax",
             _mode("softmax", _cifar_bad({b"data": np.zeros((4, 100), np.uint8),
                                          b"labels": [0, 1, 2, 3]})),
             ("data_batch_1", "shape")),
    BadInput("cifar_wrong_dtype", "softmax",
             _mode("softmax", _cifar_bad({b"data": np.zeros((4, 3072), np.float64),
                                          b"labels": [0, 1, 2, 3]})),
             ("data_batch_1", "dtype")),
    BadInput("cifar_label_count", "softmax",
             _mode("softmax", _cifar_bad({b"data": np.zeros((4, 3072), np.uint8),
                                          b"labels": [0, 1]})),
             ("data_batch_1", "labels")),
    BadInput("cifar_not_a_dict", "softmax", _mode("softmax", _cifar_bad([1, 2, 3])),
             ("data_batch_1", "not a CIFAR batch")),
    BadInput("cifar_truncated_pickle", "softmax",
             _mode("softmax", lambda r: cifar_dir_with(r, cifar_batch(4, 1)[0][:500])),
             ("data_batch_1",)),
    BadInput("cifar_payload", "softmax",
             _mode("softmax", lambda r: cifar_dir_with(r, payload_pickle(r))),
             ("data_batch_1", "refusing"), payload=True),
    BadInput("cifar_payload_meta", "softmax",
             _mode("softmax", lambda r: write(cifar_dir_with(r, cifar_batch(4, 1)[0]),
                                              "batches.meta", payload_pickle(r)).parent),
             ("batches.meta", "refusing"), payload=True),
    # --- other data problems ----------------------------------------------------------------
    BadInput("data_unknown_format", "softmax",
             _mode("softmax", lambda r: write(r, "table.csv", b"a,b\n1,2\n")),
             ("table.csv", "unknown data format")),
    BadInput("data_missing", "logistic", _mode("logistic", lambda r: r / "nope.npz"),
             ("nope.npz", "not found")),
    BadInput("test_data_wrong_size", "softmax",
             _flags("softmax", "--num_iters", "2", "--batch_size", "4", "--test_data", "__T__"),
             ("test16.npz", "training images")),
    BadInput("test_data_garbage", "logistic",
             _flags("logistic", "--num_iters", "2", "--batch_size", "4", "--test_data",
                    "__G__"),
             ("garbage_test.npz",)),
]


def _fill(build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    """Replace placeholders by files made in root (test-data cases)."""

    def wrapped(root: Path) -> list[str]:
        argv = build(root)
        subs = {
            "__T__": lambda: write(root, "test16.npz", npz_bytes(images=random_images(5, 16, 16))),
            "__G__": lambda: write(root, "garbage_test.npz", os.urandom(300)),
        }
        return [str(subs[a]()) if a in subs else a for a in argv]

    return wrapped


_DATA = [
    BadInput(c.name, c.entry, _fill(c.build), c.expect, c.payload)
    if c.name.startswith("test_data")
    else c
    for c in _DATA
]

_FLAGS: list[BadInput] = [
    BadInput("lr_zero", "softmax", _flags("softmax", "--lr", "0"), ("--lr", "> 0")),
    BadInput("lr_negative", "logistic", _flags("logistic", "--lr", "-0.1"), ("--lr",)),
    BadInput("lr_nan", "softmax", _flags("softmax", "--lr", "nan"), ("--lr",)),
    BadInput("batch_zero", "softmax", _flags("softmax", "--batch_size", "0"), ("--batch_size",)),
    BadInput("one_image_per_class", "softmax",
             _mode("softmax", lambda r: write(r, "four.npz", npz_bytes(
                 images=random_images(4), labels=np.arange(4)))),
             ("four.npz", "cannot split 4 images")),
    BadInput("batch_larger_than_set", "softmax", _flags("softmax", "--batch_size", "500"),
             ("--batch_size", "larger")),
    BadInput("num_iters_negative", "softmax", _flags("softmax", "--num_iters", "-5"),
             ("--num_iters",)),
    BadInput("num_iters_not_int", "softmax", _flags("softmax", "--num_iters", "ten"),
             ("--num_iters", "'ten'")),
    BadInput("val_fraction_above_one", "softmax", _flags("softmax", "--val_fraction", "1.5"),
             ("--val_fraction",)),
    BadInput("val_fraction_zero", "logistic", _flags("logistic", "--val-fraction", "0"),
             ("--val_fraction",)),
    BadInput("limit_one", "softmax", _flags("softmax", "--limit", "1"), ("--limit",)),
    BadInput("limit_fraction", "softmax", _flags("softmax", "--limit", "0.5"), ("--limit",)),
    BadInput("momentum_one", "softmax", _flags("softmax", "--momentum", "1"), ("--momentum",)),
    BadInput("unknown_schedule", "softmax", _flags("softmax", "--lr_schedule", "zigzag"),
             ("--lr_schedule", "zigzag")),
    BadInput("unknown_flag", "softmax", _flags("softmax", "--learning_rate", "0.1"),
             ("--learning_rate",)),
    BadInput("unknown_mode", "cli", lambda r: ["softmaxx", *_out(r)], ("softmaxx",)),
    BadInput("data_empty_string", "softmax", _flags("softmax", "--data", "", data=False),
             ("--data", "empty value")),
    BadInput("seed_negative", "softmax", _flags("softmax", "--seed", "-1"), ("--seed", "-1")),
    BadInput("seed_too_large", "cont_rep", _cont("--seed", "99999999999999999999999"),
             ("--seed",)),
    BadInput("logistic_three_classes", "logistic", _flags("logistic", "--classes", "0,1,2"),
             ("--classes", "two")),
    BadInput("logistic_same_class", "logistic", _flags("logistic", "--classes", "1,1"),
             ("--classes", "different")),
    BadInput("logistic_unknown_class", "logistic", _flags("logistic", "--classes", "0,zebra"),
             ("--classes", "zebra")),
    # --- cont_rep -----------------------------------------------------------------------------
    BadInput("cont_unknown_encoder", "cont_rep", _cont("--encoder", "resnet9000"),
             ("--encoder", "resnet9000")),
    BadInput("cont_unknown_mining", "cont_rep", _cont("--mining", "lucky"),
             ("--mining", "lucky")),
    BadInput("cont_unknown_preset", "cont_rep", _cont("--preset", "turbo"),
             ("--preset", "turbo")),
    BadInput("cont_z_dim_zero", "cont_rep", _cont("--z_dim", "0"), ("--z_dim",)),
    BadInput("cont_batch_three", "cont_rep", _cont("--batch_size", "3"), ("--batch_size",)),
    BadInput("cont_translate_too_large", "cont_rep",
             lambda r: ["cont_rep", "--data", str(good_npz32(r)), "--encoder", "airbench_small",
                        "--z_dim", "8", "--batch_size", "8", "--num_iters", "2", "--translate",
                        "32", *_out(r)],
             ("--translate", "32x32")),
    BadInput("cont_batch_larger_than_set", "cont_rep", _cont("--batch_size", "64"),
             ("--batch_size", "larger")),
    BadInput("cont_images_too_small_for_encoder", "cont_rep", _cont(),
             ("good.npz", "8x8x3", "do not fit the encoder")),
    # the training loop's own checks run before the run folder is written
    BadInput("cont_momentum_one", "cont_rep", _cont("--momentum", "1.5"), ("--momentum",)),
    BadInput("cont_warmup_frac_above_one", "cont_rep", _cont("--warmup_frac", "1.5"),
             ("--warmup_frac",)),
    BadInput("cont_lr_nan", "cont_rep", _cont("--lr", "nan"), ("--lr", "nan")),
    # nothing means anything at infinity: refused before a run folder is made
    BadInput("cont_lr_inf", "cont_rep", _cont("--lr", "inf"), ("--lr", "finite")),
    BadInput("cont_margin_inf", "cont_rep", _cont("--margin", "inf"), ("--margin", "finite")),
    BadInput("cont_time_budget_inf", "cont_rep", _cont("--time_budget", "inf"),
             ("--time_budget", "finite")),
    BadInput("cont_tsne_max_one", "cont_rep", _cont("--tsne_max", "1"), ("--tsne_max", ">= 2")),
    BadInput("pipeline_time_budget_inf", "pipeline",
             _pipeline(lambda r: ["--time_budget", "inf"]), ("--time_budget", "finite")),
    BadInput("cont_lookahead_and_ema", "cont_rep", _cont("--lookahead", "--ema_decay", "0.9"),
             ("--lookahead", "--ema_decay")),
    BadInput("cont_resume_without_out", "cont_rep",
             lambda r: ["cont_rep", "--data", str(good_npz(r)), "--resume"],
             ("--resume", "--out")),
    BadInput("cont_encoder_missing", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(r / "none.pt")]),
             ("none.pt", "not found")),
    BadInput("cont_encoder_truncated", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(truncated(encoder_file(r, z_dim=64)))]),
             ("encoder_airbench_small_64.pt", "not a readable")),
    BadInput("cont_encoder_random_bytes", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(write(r, "rand.pt", os.urandom(999)))]),
             ("rand.pt",)),
    BadInput("cont_encoder_is_npz", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(write(r, "model.pt",
                                                                 good_npz(r).read_bytes()))]),
             ("model.pt",)),
    BadInput("cont_encoder_wrong_z_dim", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(encoder_file(r, z_dim=8))]),
             ("encoder_airbench_small_8.pt", "z_dim")),
    BadInput("cont_encoder_wrong_architecture", "cont_rep",
             _cont("--encoder", "airbench", extra=lambda r: [
                 "--encoder_path", str(encoder_file(r, z_dim=64, tag="airbench"))]),
             ("encoder_airbench_small_64airbench.pt", "does not load")),
    BadInput("cont_encoder_payload", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(torch_payload(r))]),
             ("evil.pt",), payload=True),
    BadInput("cont_encoder_plain_pickle_payload", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(write(r, "evil2.pt",
                                                                 payload_pickle(r)))]),
             ("evil2.pt",), payload=True),
    # v20, found by an audit helper: clearer refusals
    BadInput("cont_encoder_is_npy", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(write(r, "emb.npy", _npy_bytes()))]),
             ("emb.npy", "a NumPy .npy array")),
    BadInput("cont_encoder_is_text", "cont_rep",
             _cont(extra=lambda r: ["--encoder_path", str(write(r, "notes.pt", b"my notes\n"))]),
             ("notes.pt", "it is text")),
    BadInput("cont_knn_k_above_the_training_split", "cont_rep", _cont("--knn_k", "1000"),
             ("--knn_k 1000", "training split")),
    BadInput("linear_patience_negative", "softmax", _flags("softmax", "--patience", "-1"),
             ("--patience", ">= 0")),
    BadInput("toml_unknown_preset_overridden", "pipeline",
             _pipeline(lambda r: ["--preset", "smoke",
                                  "--config", str(toml(r, 'preset = "nope"\n'))]),
             ("config.toml", "'nope'")),
    # --- pipeline: config files and --set ------------------------------------------------------
    BadInput("toml_invalid", "pipeline",
             _pipeline(lambda r: ["--config", str(toml(r, "limit = [1,\n[softmax\n"))]),
             ("config.toml", "TOML")),
    BadInput("toml_unknown_top_key", "pipeline",
             _pipeline(lambda r: ["--config", str(toml(r, "learning_rate = 0.1\n"))]),
             ("config.toml", "learning_rate")),
    BadInput("toml_unknown_stage_key", "pipeline",
             _pipeline(lambda r: ["--config", str(toml(r, "[softmax]\nlearning_rate = 1\n"))]),
             ("config.toml", "learning_rate")),
    BadInput("toml_wrong_type", "pipeline",
             _pipeline(lambda r: ["--config", str(toml(r, "[softmax]\nnum_iters = 'many'\n"))]),
             ("config.toml", "num_iters")),
    BadInput("toml_unknown_table", "pipeline",
             _pipeline(lambda r: ["--config", str(toml(r, "[softmaxx]\nlr = 0.1\n"))]),
             ("config.toml", "softmaxx")),
    BadInput("toml_negative_lr", "pipeline",
             _pipeline(lambda r: ["--config", str(toml(r, "[softmax]\nlr = -1.0\n"))]),
             ("stage softmax", "--lr")),
    BadInput("set_negative_lr", "pipeline", _pipeline(lambda r: ["--set", "logistic.lr=-1"]),
             ("stage logistic", "--lr")),
    BadInput("toml_negative_seed", "pipeline",
             _pipeline(lambda r: ["--config", str(toml(r, "seed = -5\n"))]), ("--seed", "-5")),
    BadInput("sweep_negative_seed", "sweep", _sweep("softmax", "--grid", "seed=0,-1"),
             ("--seed", "-1")),
    BadInput("toml_missing", "pipeline",
             _pipeline(lambda r: ["--config", str(r / "absent.toml")]), ("absent.toml",)),
    BadInput("pipeline_unknown_stage", "pipeline",
             _pipeline(lambda r: ["--stages", "softmax,teleport"]), ("--stages", "teleport")),
    BadInput("pipeline_unknown_preset", "pipeline",
             _pipeline(lambda r: ["--preset", "ludicrous"]), ("--preset", "ludicrous")),
    BadInput("pipeline_bad_set", "pipeline",
             _pipeline(lambda r: ["--set", "softmax.lr"]), ("--set", "softmax.lr")),
    BadInput("pipeline_set_wrong_type", "pipeline",
             _pipeline(lambda r: ["--set", "softmax.num_iters=lots"]), ("num_iters", "'lots'")),
    BadInput("pipeline_limit_zero", "pipeline", _pipeline(lambda r: ["--limit", "0"]),
             ("--limit",)),
    BadInput("pipeline_bad_data", "pipeline",
             lambda r: ["pipeline", "--data", str(write(r, "junk.npz", b"PK\x03\x04junk")),
                        "--stages", "softmax", *_out(r)],
             ("junk.npz",)),
    # --- sweep: grids ---------------------------------------------------------------------------
    BadInput("grid_unparseable", "sweep", _sweep("softmax", "--grid", "lr=0.1,fast"),
             ("lr", "'fast'")),
    BadInput("grid_unknown_flag", "sweep", _sweep("softmax", "--grid", "speed=1,2"),
             ("--grid", "speed")),
    BadInput("grid_empty_value", "sweep", _sweep("softmax", "--grid", "lr=0.1,,0.2"),
             ("--grid", "empty")),
    BadInput("grid_no_equals", "sweep", _sweep("softmax", "--grid", "lr"), ("--grid", "lr")),
    BadInput("grid_invalid_value", "sweep", _sweep("softmax", "--grid", "lr=0.1,0"),
             ("--lr", "> 0")),
    BadInput("sweep_unknown_mode", "sweep", _sweep("softmaxx", "--grid", "lr=1,2"),
             ("softmaxx",)),
    BadInput("sweep_bad_data", "sweep",
             lambda r: ["sweep", "softmax", "--data", str(write(r, "junk2.npz", os.urandom(64))),
                        "--grid", "lr=0.1,0.2", *_out(r)],
             ("junk2.npz",)),
]


def fake_run(root: Path, mode: str, files: dict[str, bytes] | None = None) -> Path:
    """A run folder whose config.json names ``mode``, holding ``files`` (e.g. a bad model)."""
    run = root / "run"
    write(run, "config.json", json.dumps({"mode": mode, "config": {}}).encode())
    for name, data in (files or {}).items():
        write(run, name, data)
    return run


def npy_bytes(array: np.ndarray) -> bytes:
    """An .npy file's bytes (object arrays are pickled into it, as numpy does)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def knn_run(root: Path, train_embeddings: bytes) -> Path:
    """A cont_rep run folder with a real encoder.pt and the given ``train_embeddings.npy``."""
    return fake_run(
        root,
        "cont_rep",
        {
            "encoder.pt": encoder_file(root).read_bytes(),
            "train_embeddings.npy": train_embeddings,
            "train_labels.npy": npy_bytes(np.zeros(2, np.int64)),
        },
    )


def real_linear_run(root: Path) -> Path:
    """A finished ``softmax`` run (a few updates on the good .npz) in root/run."""
    from reprlab.cli import main

    run = root / "run"
    argv = ["softmax", "--data", str(good_npz(root)), "--num_iters", "3", "--batch_size", "4"]
    assert main([*argv, "--out", str(run)]) == 0
    return run


def _predict(make_run: Callable[[Path], Path], *flags: str, data: bool = True):
    """``reprlab predict RUN --data good.npz --out root/out/preds.csv``."""

    def build(root: Path) -> list[str]:
        d = ["--data", str(good_npz(root))] if data else []
        return ["predict", str(make_run(root)), *d, *flags, "--out", str(root / "out/preds.csv")]

    return build


def _ft(mode: str, *flags: str, enc: Callable[[Path], list[str]] | None = None):
    """A fine-tuning command on a 32x32 .npz with a real (random) encoder.pt by default."""

    def build(root: Path) -> list[str]:
        e = enc(root) if enc else ["--encoder_path", str(encoder_file(root, z_dim=8))]
        tiny = ["--batch_size", "8", "--num_iters", "2"]
        return [mode, "--data", str(good_npz32(root)), *e, *tiny, *flags, *_out(root)]

    return build


def _torch_bytes(obj: object) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


_MODELS: list[BadInput] = [
    # --- predict: run folders and model files ------------------------------------------------
    BadInput("predict_run_missing", "predict", _predict(lambda r: r / "norun"),
             ("norun", "not found")),
    BadInput("predict_not_a_run", "predict",
             _predict(lambda r: write(r / "notes", "a.txt", b"hi").parent),
             ("notes", "config.json")),
    BadInput("predict_config_not_json", "predict",
             _predict(lambda r: write(r / "run", "config.json", b"{not json").parent),
             ("config.json", "JSON")),
    BadInput("predict_cont_rep_run", "predict", _predict(lambda r: fake_run(r, "cont_rep")),
             ("encoder.pt", "not found")),
    BadInput("predict_knn_index_payload", "predict",
             _predict(lambda r: knn_run(r, npy_bytes(np.array([Payload(r), Payload(r)])))),
             ("train_embeddings.npy", "not a readable"), payload=True),
    BadInput("predict_knn_index_garbage", "predict",
             _predict(lambda r: knn_run(r, os.urandom(300))),
             ("train_embeddings.npy", "not a readable")),
    BadInput("predict_knn_config_incomplete", "predict",
             _predict(lambda r: knn_run(r, npy_bytes(np.zeros((2, 8), np.float32)))),
             ("config.json", "knn_k")),
    BadInput("predict_model_missing", "predict", _predict(lambda r: fake_run(r, "softmax")),
             ("model.npz", "not found")),
    BadInput("predict_npz_model_payload", "predict",
             _predict(lambda r: fake_run(r, "softmax", {"model.npz": payload_npz(r).read_bytes()})),
             ("model.npz",), payload=True),
    BadInput("predict_npz_model_garbage", "predict",
             _predict(lambda r: fake_run(r, "logistic", {"model.npz": os.urandom(500)})),
             ("model.npz",)),
    BadInput("predict_npz_model_not_linear", "predict",
             _predict(lambda r: fake_run(r, "softmax", {"model.npz": good_npz(r).read_bytes()})),
             ("model.npz", "not a reprlab linear model")),
    BadInput("predict_pt_model_payload", "predict",
             _predict(lambda r: fake_run(r, "fine_tune_nn", {
                 "model.pt": torch_payload(r).read_bytes()})),
             ("model.pt",), payload=True),
    BadInput("predict_pt_model_truncated", "predict",
             _predict(lambda r: fake_run(r, "fine_tune_nn", {
                 "model.pt": encoder_file(r).read_bytes()[:3000]})),
             ("model.pt", "not a readable")),
    BadInput("predict_pt_model_is_encoder", "predict",
             _predict(lambda r: fake_run(r, "fine_tune_nn", {
                 "model.pt": encoder_file(r).read_bytes()})),
             ("model.pt", "not a fine_tune_nn model")),
    BadInput("predict_pt_model_wrong_architecture", "predict",
             _predict(lambda r: fake_run(r, "fine_tune_nn", {"model.pt": _torch_bytes({
                 "format": "reprlab-fine-tune-nn", "encoder": "airbench", "z_dim": 8,
                 "n_classes": 4, "hidden": [16], "features": "z", "state_dict": {}})})),
             ("model.pt",)),
    BadInput("predict_pt_model_meta_damaged", "predict",
             _predict(lambda r: fake_run(r, "fine_tune_nn", {"model.pt": _torch_bytes({
                 "format": "reprlab-classifier", "encoder": "airbench_small", "z_dim": 8,
                 "n_classes": 4, "hidden": [16], "features": "z", "state_dict": {},
                 "classes": 7, "image_shape": [8, 8, 3], "mean": [0.0] * 3,
                 "std": [1.0] * 3})})),
             ("model.pt", "damaged")),
    BadInput("predict_config_not_an_object", "predict",
             _predict(lambda r: write(r / "run", "config.json", b"[1, 2]").parent),
             ("config.json",)),
    BadInput("predict_pt_model_list", "predict",
             _predict(lambda r: fake_run(r, "fine_tune_nn", {"model.pt": _torch_bytes([1, 2])})),
             ("model.pt", "not a reprlab checkpoint")),
    BadInput("predict_run_is_a_file", "predict", _predict(lambda r: good_npz(r)),
             ("good.npz", "a file, not a run folder")),
    BadInput("ft_nn_encoder_path_of_a_softmax_run", "fine_tune_nn",
             _ft("fine_tune_nn", enc=lambda r: ["--encoder_path", str(fake_run(r, "softmax"))]),
             ("encoder.pt", "a softmax run folder has none")),
    BadInput("predict_data_missing", "predict",
             lambda r: ["predict", str(real_linear_run(r)), "--data", str(r / "gone.npz"),
                        "--out", str(r / "out/preds.csv")],
             ("gone.npz", "not found")),
    BadInput("predict_data_wrong_size", "predict",
             lambda r: ["predict", str(real_linear_run(r)), "--data",
                        str(write(r, "big.npz", npz_bytes(images=random_images(3, 16, 16)))),
                        "--out", str(r / "out/preds.csv")],
             ("big.npz", "16x16x3")),
    BadInput("predict_batch_zero", "predict",
             _predict(lambda r: fake_run(r, "softmax"), "--batch_size", "0"),
             ("--batch_size",)),
    BadInput("predict_no_data_flag", "predict", _predict(lambda r: fake_run(r, "softmax"),
                                                         data=False), ("--data",)),
    # --- fine_tune_linear / fine_tune_nn -------------------------------------------------------
    BadInput("ft_linear_no_encoder", "fine_tune_linear", _ft("fine_tune_linear", enc=lambda r: []),
             ("--encoder_path", "required")),
    BadInput("ft_linear_encoder_payload", "fine_tune_linear",
             _ft("fine_tune_linear", enc=lambda r: ["--encoder_path", str(torch_payload(r))]),
             ("evil.pt",), payload=True),
    BadInput("ft_nn_encoder_truncated", "fine_tune_nn",
             _ft("fine_tune_nn", enc=lambda r: ["--encoder_path",
                                                str(truncated(encoder_file(r, z_dim=8)))]),
             ("encoder_airbench_small_8.pt",)),
    BadInput("ft_nn_encoder_random_bytes", "fine_tune_nn",
             _ft("fine_tune_nn", enc=lambda r: ["--encoder_path",
                                                str(write(r, "junk.pt", os.urandom(777)))]),
             ("junk.pt",)),
    *(BadInput(f"ft_nn_encoder_tampered_{key}", "fine_tune_nn",
               _ft("fine_tune_nn", enc=lambda r, key=key, v=v: [
                   "--encoder_path", str(tampered_encoder(r, **{key: v}))]),
               (f"tampered_{key}.pt",))
      for key, v in (("kwargs", "x"), ("z_dim", "x"), ("image_shape", [0, -1]),
                     ("mean", "abc"), ("std", [1.0]), ("classes", 7))),
    BadInput("ft_nn_wrong_z_dim", "fine_tune_nn", _ft("fine_tune_nn", "--z_dim", "64"),
             ("z_dim",)),
    BadInput("ft_nn_warmup_start_two", "fine_tune_nn",
             _ft("fine_tune_nn", "--warmup_start", "2"), ("--warmup_start",)),
    BadInput("ft_nn_unknown_head", "fine_tune_nn", _ft("fine_tune_nn", "--head", "transformer"),
             ("--head", "transformer")),
    BadInput("ft_nn_translate_too_large", "fine_tune_nn", _ft("fine_tune_nn", "--translate", "99"),
             ("--translate", "32x32")),
    BadInput("ft_nn_weight_decay_inf", "fine_tune_nn",
             _ft("fine_tune_nn", "--weight_decay", "inf"), ("--weight_decay", "finite")),
    BadInput("ft_nn_bad_hidden", "fine_tune_nn", _ft("fine_tune_nn", "--hidden", "64,x"),
             ("--hidden", "'64,x'")),
    BadInput("ft_nn_label_smoothing_one", "fine_tune_nn",
             _ft("fine_tune_nn", "--label_smoothing", "1"), ("--label_smoothing",)),
    BadInput("ft_nn_images_of_another_size", "fine_tune_nn",
             lambda r: ["fine_tune_nn", "--data", str(good_npz(r)), "--encoder_path",
                        str(encoder_file(r, z_dim=8)), "--batch_size", "8", *_out(r)],
             ("good.npz",)),
]

CORPUS: list[BadInput] = _DATA + _FLAGS + _MODELS


def by_name(name: str) -> BadInput:
    return next(c for c in CORPUS if c.name == name)


__all__ = ["CORPUS", "MARKER", "BadInput", "Payload", "by_name", "encoder_file", "good_npz",
           "payload_npz", "payload_pickle", "torch_payload", "write"]
