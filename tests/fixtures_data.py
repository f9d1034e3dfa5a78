"""Builders of small dataset files in every format reprlab reads (for tests; all in tmp folders).

Import from a test module as ``from fixtures_data import make_npz, ...`` (pytest puts ``tests/``
on ``sys.path``).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES3 = ["cat", "dog", "frog"]


def random_images(n: int, h: int = 8, w: int = 8, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def make_npz(path: Path, n: int = 12, labels: bool = True, k: int = 3, **extra: object) -> Path:
    """An .npz with ``images`` (n, 8, 8, 3) uint8 and (optionally) ``labels`` in 0..k-1."""
    arrays: dict[str, object] = {"images": random_images(n)}
    if labels:
        arrays["labels"] = np.arange(n) % k
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def image_folder_files(
    per_class: int = 4, classes: list[str] | None = None, prefix: str = "", size: int = 8
) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """Files ``<prefix><class>/<i>.png`` (lossless) → (files, images in sorted order, labels)."""
    classes = classes or CLASSES3
    files: dict[str, bytes] = {}
    imgs, labs = [], []
    for ci, c in enumerate(sorted(classes)):
        for i in range(per_class):
            arr = random_images(1, size, size, seed=100 * ci + i)[0]
            files[f"{prefix}{c}/{i:04d}.png"] = _png(arr)
            imgs.append(arr)
            labs.append(ci)
    return files, np.stack(imgs), np.array(labs)


def write_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes], mode: str | None = None) -> Path:
    """A tar (compression from the suffix unless ``mode`` is given) with exactly these members."""
    if mode is None:
        name = path.name
        mode = "w:xz" if name.endswith(".xz") else "w:gz" if name.endswith("gz") else "w"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def cifar_batch(n: int, seed: int, k: int = 10, protocol: int = 2) -> tuple[bytes, np.ndarray]:
    """A pickled CIFAR batch like the official release (bytes keys, CHW rows) + its NHWC images."""
    imgs = random_images(n, 32, 32, seed=seed)
    data = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
    labels = [int(v) for v in np.arange(n) % k]
    batch = {b"batch_label": b"testing batch", b"labels": labels, b"data": data,
             b"filenames": [b"x.png"] * n}  # fmt: skip
    return pickle.dumps(batch, protocol=protocol), imgs


def cifar_meta(names: list[str]) -> bytes:
    meta = {
        b"num_cases_per_batch": 10,
        b"label_names": [n.encode() for n in names],
        b"num_vis": 3072,
    }
    return pickle.dumps(meta, protocol=2)


def cifar_files(
    n_train: int = 4, n_test: int = 3, names: list[str] | None = None
) -> dict[str, bytes]:
    """``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` contents."""
    from reprlab.data import CIFAR10_CLASSES

    files = {f"data_batch_{i}": cifar_batch(n_train, seed=i)[0] for i in range(1, 6)}
    files["test_batch"] = cifar_batch(n_test, seed=99)[0]
    files["batches.meta"] = cifar_meta(names or CIFAR10_CLASSES)
    return files


def make_cifar_folder(root: Path, **kw: object) -> Path:
    return write_dir(root / "cifar-10-batches-py", cifar_files(**kw))  # type: ignore[arg-type]


def make_cifar_targz(path: Path, **kw: object) -> Path:
    files = cifar_files(**kw)  # type: ignore[arg-type]
    return write_tar(path, {f"cifar-10-batches-py/{k}": v for k, v in files.items()}, "w:gz")


def py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled opcode by opcode the way Python 2 wrote the official CIFAR-10 release.

    (str keys and raw bytes as SHORT_BINSTRING/BINSTRING, arrays via
    ``numpy.core.multiarray._reconstruct``; ``data`` must be (N, 3072) uint8, N < 65536.)
    """
    n = data.shape[0]
    raw = data.tobytes()
    out = b"\x80\x02}(" + b"U\x04data"  # PROTO 2, EMPTY_DICT, MARK, key
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
    out += b"(K\x01M" + n.to_bytes(2, "little") + b"M\x00\x0c\x86"  # state: (1, (n, 3072),
    out += b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"  # dtype('u1') ...
    out += b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89T" + len(raw).to_bytes(4, "little") + raw + b"tb"  # False, raw bytes) BUILD
    out += b"U\x06labels](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return out + b"u."
