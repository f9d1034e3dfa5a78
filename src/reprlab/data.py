"""Every dataset format reprlab reads, the decoded-array cache, the CIFAR-10 download, transforms.

This is the one place that knows input file formats. Whatever the source, :func:`load_images`
returns an :class:`ImageSet` (uint8 NHWC images, int64 labels or ``None``, class names).

Supported sources:

- ``.npz`` with ``images`` (N,H,W,C) or (N,H,W) uint8, optional ``labels`` (N,) integers and
  optional ``classes`` (K,) strings; read with ``allow_pickle=False``.
- The official CIFAR-10 python release: a ``cifar-10-batches-py`` folder or the
  ``cifar-10-python.tar.gz`` archive (read in place, pickles through a restricted unpickler).
- An image folder ``<root>/<class>/<image>`` (any of ``IMAGE_SUFFIXES``: jpg, png, bmp, gif,
  webp, tif, ...) or ``<root>/<split>/<class>/...`` as a
  directory or a tar (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.xz``, ``.tar.bz2``), read without
  extracting. Class names are the sorted folder names; a flat folder is unlabelled.
- One image file (any of ``IMAGE_SUFFIXES``): one unlabelled image (``reprlab predict``).
- ``None``: the official CIFAR-10, from ``REPRLAB_DATA`` or downloaded once to the cache folder.

Archives and image folders are decoded once and cached as ``.npy`` files under ``REPRLAB_CACHE``
(default ``~/.cache/reprlab``; ``REPRLAB_CACHE=off`` disables it).
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import pickle
import re
import stat
import sys
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from reprlab.errors import ReprlabError, first_line
from reprlab.io import atomic_open, file_digest, save_npy, walk_files, write_json

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # PIL reads
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")
#: Refuse arrays whose header declares more than this (a zip-bomb-like .npz).
MAX_ARRAY_BYTES = 8 << 30
#: Bump when the cached arrays' meaning changes: old cache entries are then ignored.
CACHE_FORMAT_VERSION = 4  # 2 (v17): hidden folders and files are no longer read as data;
# 3 (v21): .bmp, .gif (its first frame), .webp and .tif files are read as images too;
# 4 (v22): EXIF-rotated photos upright, 16-bit and float grey scaled (they were clipped)


# ---------------------------------------------------------------------------------------------
# The dataset type
# ---------------------------------------------------------------------------------------------


@dataclass
class ImageSet:
    """Images with optional labels: what every loader returns."""

    images: np.ndarray  # uint8 (N, H, W, C), C in {1, 3}
    labels: np.ndarray | None  # int64 (N,), values in [0, len(classes)), or None (unlabelled)
    classes: list[str]  # class names in label order
    source: str  # file/folder it came from (used in error messages)
    # each image's file, relative to ``source`` (image folders and archives); None for arrays
    names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> ImageSet:
        """The images (and labels, names) at ``idx`` (indices or a mask), same classes and
        source."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        labels = None if self.labels is None else self.labels[idx]
        names = None if self.names is None else [self.names[i] for i in idx.tolist()]
        return ImageSet(self.images[idx], labels, list(self.classes), self.source, names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.images.shape[1:]
        return int(h), int(w), int(c)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def load_images(
    source: str | Path | None,
    *,
    require_labels: bool = False,
    split: str = "train",
    size: tuple[int, int] | None = None,
) -> ImageSet:
    """Load images (and labels when the source has them) from any supported source.

    ``split`` picks ``train``/``test`` for CIFAR python batches and the ``<split>/`` folder of an
    image folder that has one; ``.npz`` files ignore it. ``require_labels`` raises
    :class:`ReprlabError` if the source has no labels. ``size`` (height, width): image files
    (a folder, an archive of them, one file) are each resized to it as they are decoded, so
    they need not share a size (``predict --resize``; cached apart); arrays are left as they
    are.
    """
    path = default_cifar10(split) if source is None else Path(source).expanduser()
    ds = _load_path(path, split, size)
    if require_labels and ds.labels is None:
        raise ReprlabError(f"{ds.source}: has no labels (a labelled training set is needed)")
    return ds


def _load_path(path: Path, split: str, size: tuple[int, int] | None = None) -> ImageSet:
    if not path.exists():
        raise ReprlabError(f"{path}: file not found")
    name = path.name.lower()
    if path.is_dir():
        batches = _cifar_folder(path)
        if batches is not None:
            return _load_cifar_folder(batches, split)
        # e.g. --data ~/.cache/reprlab/datasets, or this project's shared CIFAR-10 folder
        for known in (CIFAR10_ARCHIVE, _shared_name(split)):
            if (path / known).is_file():
                return _load_path(path / known, split, size)
        return _cached(path, split, lambda: _load_image_dir(path, split, size), size)
    if name.endswith(".npz"):
        return load_npz(path)
    if name.endswith(TAR_SUFFIXES):
        return _cached(path, split, lambda: _load_tar(path, split, size), size)
    if _is_image_name(name):
        return _decode_all([(str(path), None, lambda: _read_image_file(path))], [], path, size)
    zip_note = "; zip archives are not read, a tar is" if name.endswith(".zip") else ""
    raise ReprlabError(
        f"{path}: unknown data format{zip_note} (expected an .npz, an archive "
        f"({'/'.join(TAR_SUFFIXES)}), "
        f"a cifar-10-batches-py folder, an image folder or an image file "
        f"({'/'.join(IMAGE_SUFFIXES)}))"
    )


# ---------------------------------------------------------------------------------------------
# Validation shared by all formats
# ---------------------------------------------------------------------------------------------


def _check(images: Any, labels: Any, classes: list[str] | None, source: str) -> ImageSet:
    """Check arrays from any format and build the :class:`ImageSet` (errors name ``source``)."""
    if not isinstance(images, np.ndarray):
        raise ReprlabError(f"{source}: images are not an array")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ReprlabError(
            f"{source}: images have shape {images.shape}; expected (N, H, W, C) or (N, H, W)"
        )
    if images.dtype != np.uint8:
        raise ReprlabError(f"{source}: images have dtype {images.dtype}; expected uint8 (0..255)")
    if images.shape[-1] not in (1, 3):
        raise ReprlabError(
            f"{source}: images have {images.shape[-1]} channels; expected 1 or 3 "
            f"(shape {images.shape}, layout NHWC)"
        )
    if len(images) == 0:
        raise ReprlabError(f"{source}: contains no images")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ReprlabError(f"{source}: images have zero size {images.shape[1:3]}")
    if labels is None:
        return ImageSet(images, None, list(classes or []), source)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ReprlabError(f"{source}: labels have shape {labels.shape}; expected ({len(images)},)")
    if len(labels) != len(images):
        raise ReprlabError(f"{source}: {len(labels)} labels for {len(images)} images")
    if labels.dtype == bool or labels.dtype.kind not in "iu":
        raise ReprlabError(f"{source}: labels have dtype {labels.dtype}; expected integers")
    if labels.min() < 0:
        raise ReprlabError(f"{source}: negative label {int(labels.min())}")
    top = int(labels.max())
    if classes is None and top >= max(len(labels), 1000):  # 0..top would be mostly empty classes
        raise ReprlabError(
            f"{source}: label {top} for {len(labels)} images and no class names; labels must be "
            "class indices 0..K-1 (or give a 'classes' array)"
        )
    if classes is not None:
        classes = [printable(c) for c in classes]
        if any(not n.strip() for n in classes):
            raise ReprlabError(f"{source}: an empty class name (names are {classes[:12]})")
        if len(set(classes)) != len(classes):
            dup = next(n for n in classes if classes.count(n) > 1)
            raise ReprlabError(f"{source}: class name {dup!r} appears more than once")
    else:
        # labels 0..9 without names are taken for CIFAR-10's; any other range is named 0..top
        classes = list(CIFAR10_CLASSES) if top == 9 else [str(i) for i in range(top + 1)]
    if top >= len(classes):
        raise ReprlabError(f"{source}: label {top} out of range for {len(classes)} classes")
    return ImageSet(images, labels.astype(np.int64), list(classes), source)


def printable(name: object) -> str:
    """A class or file name as text every writer takes (JSON, CSV, plots): bytes that are not
    UTF-8 (a folder named on an old Windows share: Python holds them as lone surrogates) become
    ``\\xe9`` (two such names stay apart). The files themselves are still read by their real
    names."""
    text = str(name)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name holds (an .npz's text)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------


def load_npz(path: str | Path) -> ImageSet:
    """Read ``images`` (+ optional ``labels``, ``classes``) from an ``.npz`` without pickles.

    Each array's header is checked against the zip member's size before reading, so a file that
    claims a huge array is refused instead of exhausting memory.
    """
    path = Path(path)
    if not path.is_file():
        raise ReprlabError(f"{path}: file not found")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "images.npy" not in names:
                found = ", ".join(sorted(n.removesuffix(".npy") for n in names)) or "nothing"
                raise ReprlabError(f"{path}: no 'images' array in the .npz (found: {found})")
            images = _read_npy_member(zf, "images", path)
            labels = _read_npy_member(zf, "labels", path) if "labels.npy" in names else None
            classes = _read_npy_member(zf, "classes", path) if "classes.npy" in names else None
    except ReprlabError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError,
            ValueError, NotImplementedError) as e:  # fmt: skip
        raise ReprlabError(f"{path}: not a readable .npz file ({first_line(e)})") from None
    class_list: list[str] | None = None
    if classes is not None:
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            raise ReprlabError(f"{path}: 'classes' must be a 1-D array of strings")
        class_list = [
            c.decode("utf-8", "backslashreplace") if isinstance(c, bytes) else str(c)
            for c in classes.tolist()
        ]
    return _check(images, labels, class_list, str(path))


def _read_npy_member(zf: zipfile.ZipFile, key: str, path: Path) -> np.ndarray:
    info = zf.getinfo(f"{key}.npy")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ReprlabError(f"{path}: '{key}' has unsupported .npy version {version}")
        if dtype.hasobject:
            raise ReprlabError(f"{path}: '{key}' holds Python objects (would need a pickle)")
        nbytes = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
        header = f.tell()
        if nbytes > MAX_ARRAY_BYTES:
            raise ReprlabError(
                f"{path}: '{key}' declares shape {shape} ({nbytes / 2**30:.1f} GiB), over the "
                f"{MAX_ARRAY_BYTES >> 30} GiB limit"
            )
        if header + nbytes != info.file_size:
            raise ReprlabError(
                f"{path}: '{key}' declares shape {shape} {dtype} ({nbytes} bytes) but the file "
                f"holds {info.file_size - header} bytes (corrupt or truncated)"
            )
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise ReprlabError(f"{path}: '{key}' is truncated")
    order = "F" if fortran else "C"
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy()


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python release (pickled batches)
# ---------------------------------------------------------------------------------------------


def _numpy_callables() -> dict[tuple[str, str], Any]:
    import importlib

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
        numeric = importlib.import_module("numpy._core.numeric")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
        numeric = importlib.import_module("numpy.core.numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    # Python-3 protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'): allow just that.
    allowed[("_codecs", "encode")] = _latin1_encode
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):  # protocol-5 pickles of arrays
            allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing to unpickle _codecs.encode with these arguments")
    return text.encode("latin1")


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: anything else is refused."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _SafeUnpickler._allowed is None:
            _SafeUnpickler._allowed = _numpy_callables()
        try:
            return _SafeUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}") from None


def safe_unpickle(data: bytes, where: str) -> Any:
    """Unpickle CIFAR batch bytes (python-2 pickles: ``encoding='bytes'``) without running code."""
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise ReprlabError(f"{where}: {first_line(e)} (not a plain CIFAR batch)") from None
    except Exception as e:  # truncated / garbage pickles raise many types
        raise ReprlabError(f"{where}: not a readable CIFAR batch ({first_line(e)})") from None


def _batch_names(split: str) -> list[str]:
    if split == "train":
        return [f"data_batch_{i}" for i in range(1, 6)]
    if split == "test":
        return ["test_batch"]
    raise ReprlabError(f"split must be 'train' or 'test' for CIFAR-10 batches, got {split!r}")


def _parse_batch(obj: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, dict):
        raise ReprlabError(f"{where}: not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise ReprlabError(f"{where}: not a CIFAR batch (needs 'data' array and 'labels')")
    if data.dtype != np.uint8:
        raise ReprlabError(f"{where}: batch data has dtype {data.dtype}; expected uint8")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ReprlabError(f"{where}: batch data has shape {data.shape}; expected (N, 3072)")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    try:
        lab = np.asarray(labels)
    except Exception:
        raise ReprlabError(f"{where}: batch labels are not a list of integers") from None
    if lab.ndim != 1 or lab.dtype == bool or lab.dtype.kind not in "iu":
        raise ReprlabError(f"{where}: batch labels are not a list of integers")
    if len(lab) != len(images):
        raise ReprlabError(f"{where}: {len(lab)} labels for {len(images)} images")
    return images, lab.astype(np.int64)


def _parse_meta(obj: Any, where: str) -> list[str]:
    names = obj.get(b"label_names", obj.get("label_names")) if isinstance(obj, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise ReprlabError(f"{where}: not a CIFAR batches.meta (needs 'label_names')")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _assemble_cifar(
    batches: dict[str, bytes], meta: bytes | None, split: str, source: str
) -> ImageSet:
    wanted = [n for n in _batch_names(split) if n in batches]
    if not wanted:
        raise ReprlabError(f"{source}: no {' / '.join(_batch_names(split))} for split {split!r}")
    parts = [
        _parse_batch(safe_unpickle(batches[n], f"{source}:{n}"), f"{source}:{n}") for n in wanted
    ]
    if len(wanted) < len(_batch_names(split)):  # a partial copy of the release
        note_once(
            f"reprlab: note: {source}: only {', '.join(wanted)} of the "
            f"{len(_batch_names(split))} {split} batches found; using those"
        )
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    classes = (
        _parse_meta(safe_unpickle(meta, f"{source}:batches.meta"), f"{source}:batches.meta")
        if meta
        else None
    )
    return _check(images, labels, classes, source)


def _cifar_folder(path: Path) -> Path | None:
    """The CIFAR batches folder at or directly under ``path``, if any."""
    for d in (path, path / CIFAR10_FOLDER):
        if d.is_dir() and any(
            (d / n).is_file() for n in ("batches.meta", "test_batch", "data_batch_1")
        ):
            return d
    return None


def _load_cifar_folder(folder: Path, split: str) -> ImageSet:
    def read(file: Path) -> bytes:
        _refuse_if_larger(str(file), file.stat().st_size, MAX_BATCH_BYTES)
        return file.read_bytes()

    batches = {n: read(folder / n) for n in _batch_names(split) if (folder / n).is_file()}
    meta_file = folder / "batches.meta"
    meta = read(meta_file) if meta_file.is_file() else None
    return _assemble_cifar(batches, meta, split, str(folder))


# ---------------------------------------------------------------------------------------------
# Image folders (directories and tars)
# ---------------------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


#: Photos PIL cannot decode: skipped like any other file, but with a note (a class made of
#: iPhone .heic photos would otherwise vanish without a word).
UNREAD_PHOTO_SUFFIXES = (".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".nef", ".arw")


def _note_unread_photos(names: list[str], source: Path) -> None:
    """A note on stderr when ``source`` holds photos of a format reprlab does not read."""
    counts: dict[str, int] = {}
    for name in names:
        suffix = os.path.splitext(name)[1].lower()
        if suffix in UNREAD_PHOTO_SUFFIXES:
            counts[suffix] = counts.get(suffix, 0) + 1
    if counts:
        which = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        note_once(
            f"note: {source}: skipped {which} file(s), a photo format reprlab does not read; "
            f"convert them to JPEG or PNG to use them (read: {', '.join(IMAGE_SUFFIXES)})"
        )


def _hidden(parts: Sequence[str]) -> bool:
    """A path under a hidden folder or of a hidden file (``.ipynb_checkpoints/``, macOS's
    ``._name.jpg`` and ``__MACOSX/``): not part of the data set, never a class."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


#: The largest image file read (a CIFAR image is a few KB): a damaged or hostile archive
#: (a sparse member of 100 GB) is refused instead of exhausting memory.
MAX_IMAGE_BYTES = 64 << 20
#: The largest CIFAR batch file read (each of the official ones is ~31 MB).
MAX_BATCH_BYTES = 512 << 20


def _safe_member_name(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        raise ReprlabError(f"{archive}: member {name!r} escapes the archive folder (refused)")
    return p


# what a damaged archive raises: gzip/zlib, xz (LZMAError), bz2 (OSError), a cut-off stream
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def _iter_tar(path: Path) -> Iterator[tuple[PurePosixPath, tarfile.TarFile, tarfile.TarInfo]]:
    try:
        tf = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the with below)
    except _TAR_ERRORS as e:
        raise ReprlabError(f"{path}: not a readable tar archive ({first_line(e)})") from None
    with tf:
        try:
            for m in tf:
                rel = _safe_member_name(m.name, path)
                # a hard or symbolic link to another member is that member's file, as in a
                # folder (read from the archive, never from the disk)
                if m.isfile() or m.islnk() or m.issym():
                    yield rel, tf, m
        except _TAR_ERRORS as e:
            raise _corrupt_tar(path, e) from None


def _corrupt_tar(path: Path, e: BaseException) -> ReprlabError:
    return ReprlabError(
        f"{path}: corrupt or truncated tar archive ({first_line(e)}; an interrupted download?)"
    )


def _refuse_if_larger(where: str, size: int, most: int) -> None:
    """A file of an image data set declared larger than ``most`` bytes: refused, unread."""
    if size > most:
        raise ReprlabError(
            f"{where} is {size / 2**20:,.0f} MiB, larger than any file of an image data set "
            f"({most >> 20} MiB at most; refused)"
        )


def _read_member(tf: tarfile.TarFile, m: tarfile.TarInfo, path: Path, most: int) -> bytes:
    _refuse_if_larger(f"{path}: member {m.name!r}", m.size, most)
    try:
        f = tf.extractfile(m)
        if f is None:
            raise ReprlabError(f"{path}: member {m.name!r} cannot be read")
        data = f.read(most + 1)  # a link's size is its target's, known only now
    except KeyError:  # extractfile of a link whose target the archive lacks
        raise ReprlabError(
            f"{path}: member {m.name!r} is a link to {m.linkname!r}, which the archive does not "
            "hold as a file"
        ) from None
    except RecursionError:  # tarfile follows a loop of symbolic links without end
        raise ReprlabError(f"{path}: member {m.name!r} is a loop of symbolic links") from None
    except _TAR_ERRORS as e:
        raise _corrupt_tar(path, e) from None
    _refuse_if_larger(f"{path}: member {m.name!r}", len(data), most)
    return data


def _load_tar(path: Path, split: str, size: tuple[int, int] | None = None) -> ImageSet:
    from tqdm import tqdm

    images: dict[PurePosixPath, bytes] = {}
    batches: dict[str, bytes] = {}
    meta: bytes | None = None
    skipped: list[str] = []  # files that are no image reprlab reads
    bar = tqdm(desc=f"reading {path.name}", unit=" files", disable=None, file=sys.stderr)
    with bar:
        for rel, tf, m in _iter_tar(path):
            base = rel.name
            if _hidden(rel.parts):
                continue
            if base == "batches.meta":
                meta = _read_member(tf, m, path, MAX_BATCH_BYTES)
            elif base == "test_batch" or re.fullmatch(r"data_batch_\d+", base):
                batches[base] = _read_member(tf, m, path, MAX_BATCH_BYTES)
            elif _is_image_name(base):
                images[rel] = _read_member(tf, m, path, MAX_IMAGE_BYTES)
                bar.update()
            else:
                skipped.append(base)
    _note_unread_photos(skipped, path)
    if batches or meta is not None:
        return _assemble_cifar(batches, meta, split, str(path))
    entries, classes = _layout(list(images), split, path)
    return _decode_all(
        [(str(p), lab, lambda p=p: images[p]) for p, lab in entries], classes, path, size
    )


def _load_image_dir(path: Path, split: str, size: tuple[int, int] | None = None) -> ImageSet:
    files = [  # class folders may be links
        rel
        for f in walk_files(path)
        if not _hidden((rel := PurePosixPath(Path(f).relative_to(path).as_posix())).parts)
    ]
    _note_unread_photos([f.name for f in files], path)
    rels = [f for f in files if _is_image_name(f.name)]
    entries, classes = _layout(rels, split, path)
    return _decode_all(
        [(str(path / p), lab, lambda p=p: _read_image_file(path / p)) for p, lab in entries],
        classes,
        path,
        size,
    )


def _read_image_file(file: Path) -> bytes:
    try:
        st = file.stat()
    except FileNotFoundError:
        if not file.is_symlink():
            raise
        raise ReprlabError(
            f"{file}: a broken link (to {os.readlink(file)}, which does not exist)"
        ) from None
    if not stat.S_ISREG(st.st_mode):  # reading a pipe would wait forever
        raise ReprlabError(f"{file}: not a regular file (a pipe, socket or device)")
    _refuse_if_larger(str(file), st.st_size, MAX_IMAGE_BYTES)
    return file.read_bytes()


def _layout(
    paths: list[PurePosixPath], split: str, source: Path
) -> tuple[list[tuple[PurePosixPath, int | None]], list[str]]:
    """Turn image paths into (path, label) in sorted order + class names.

    Depth 1: unlabelled images. Depth 2: ``<class>/<file>``. Deeper: a ``<split>/`` folder is
    picked, or a single common top folder is stripped.
    """
    if not paths:
        raise ReprlabError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    prefix: tuple[str, ...] = ()
    cur = sorted(paths, key=str)
    while True:
        depths = {len(p.parts) - len(prefix) for p in cur}
        if len(depths) > 1:  # name an image at the rarest depth: the stray one
            rare = min(depths, key=lambda d: sum(len(p.parts) - len(prefix) == d for p in cur))
            odd = next(p for p in cur if len(p.parts) - len(prefix) == rare)
            raise ReprlabError(
                f"{source}: images at different folder depths (e.g. {odd}); expected "
                "<class>/<image> or <split>/<class>/<image>"
            )
        depth = depths.pop()
        if depth <= 2:
            break
        tops = sorted({p.parts[len(prefix)] for p in cur})
        if split in tops:
            top = split
        elif len(tops) == 1 and tops[0] not in SPLIT_NAMES:
            top = tops[0]
        else:
            raise ReprlabError(f"{source}: no {split!r} split (folders: {', '.join(tops)})")
        prefix = (*prefix, top)
        cur = [p for p in cur if p.parts[len(prefix) - 1] == top]
    if depth == 1:
        return [(p, None) for p in cur], []
    classes = sorted({p.parts[len(prefix)] for p in cur})
    index = {c: i for i, c in enumerate(classes)}
    return [(p, index[p.parts[len(prefix)]]) for p in cur], classes


def _rgb_array(im: Any, where: str) -> np.ndarray:
    """An opened PIL image as uint8 (H, W, 3), upright as its EXIF orientation says (a phone's
    photo); integer grey (modes I;16, I) of 0..65535 scaled to 0..255 and float grey (F) of
    0..1 scaled, 8-bit values in either kept, other ranges refused (PIL's own
    ``convert("RGB")`` clips them: white or black images)."""
    from PIL import ImageOps

    try:
        with warnings.catch_warnings():  # damaged EXIF: PIL warns; the photo is read unrotated
            warnings.simplefilter("ignore")
            if im.getexif().get(0x0112, 1) != 1:  # Orientation: only a rotated photo turns
                im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - older Pillows raise struct.error, TypeError, ...
        pass
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode.startswith("I") or im.mode == "F":
        a = np.array(im, dtype=np.float32)  # a copy: scaled in place
        if not np.isfinite(a).all():
            raise ReprlabError(f"{where}: pixel values that are not finite numbers")
        lo, hi = float(a.min()), float(a.max())
        if im.mode == "F" and lo >= -1e-3 and hi <= 1 + 1e-3:
            a *= 255  # float grey in 0..1
        elif lo < -1e-3 or hi > (255 if im.mode == "F" else 65535):
            raise ReprlabError(
                f"{where}: pixel values {lo:g}..{hi:g} are outside 0..1, 0..255 and 0..65535"
            )
        elif hi > 255:  # 16-bit grey: 65535 is white (8-bit values in a wider type stay)
            a /= 257
        grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _decode_all(
    entries: list[tuple[str, int | None, Any]],
    classes: list[str],
    source: Path,
    size: tuple[int, int] | None = None,
) -> ImageSet:
    """Decode every entry (name, label, read) to RGB, each resized to ``size`` when given."""
    from PIL import Image
    from tqdm import tqdm

    out: np.ndarray | None = None
    first = ""
    for i, (name, _lab, read) in enumerate(
        tqdm(entries, desc=f"decoding {source.name}", unit=" img", disable=None, file=sys.stderr)
    ):
        where = f"{source}: {name}" if not name.startswith(str(source)) else name
        data = read()
        if not data:
            raise ReprlabError(f"{where}: an empty file, not an image")
        try:
            with warnings.catch_warnings():
                # 89-179 megapixels: PIL warns, then reads it (past that it refuses: below)
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    arr = _rgb_array(im, where)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ReprlabError(f"{where}: not a readable image ({first_line(e)})") from None
        if size is not None and arr.shape[:2] != tuple(size):
            arr = resize_images(arr[None], *size)[0]
        if out is None:
            out = np.empty((len(entries), *arr.shape), dtype=np.uint8)
            first = name
        elif arr.shape != out.shape[1:]:
            h, w = out.shape[1:3]
            raise ReprlabError(
                f"{where}: image is {arr.shape[1]}x{arr.shape[0]}, but {first} and the images "
                f"before it are {w}x{h} (all images must share a size; predict --resize "
                "resizes each)"
            )
        out[i] = arr
    labels = None if entries[0][1] is None else np.array([e[1] for e in entries], dtype=np.int64)
    ds = _check(out, labels, classes if labels is not None else [], str(source))
    if source.is_dir():  # a folder: each file relative to it
        ds.names = [printable(os.path.relpath(name, source)) for name, _, _ in entries]
    elif _is_image_name(source.name):  # one image file
        ds.names = [printable(source.name)]
    else:  # an archive: its members' paths
        ds.names = [printable(name) for name, _, _ in entries]
    return ds


# ---------------------------------------------------------------------------------------------
# Cache of decoded arrays
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path | None:
    """``REPRLAB_CACHE`` or ``~/.cache/reprlab``; ``None`` when caching is off."""
    env = os.environ.get("REPRLAB_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    return Path(env).expanduser() if env else Path.home() / ".cache" / "reprlab"


def _source_key(path: Path, split: str) -> str:
    path = path.resolve()
    h = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}|{path}|{split}".encode("utf-8", "surrogateescape"))
    if path.is_dir():  # the files the reader reads, linked class folders included
        for full in walk_files(path):
            try:
                st = os.stat(full)
            except OSError:  # a dangling link: the reader reports it, if it is an image
                st = os.lstat(full)
            rel = os.path.relpath(full, path)
            h.update(f"|{rel}:{st.st_size}:{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    else:
        st = path.stat()
        h.update(f"|{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _cached(
    path: Path, split: str, load: Any, size: tuple[int, int] | None = None
) -> ImageSet:
    """Load from the decoded-array cache, or call ``load()`` and store its result (images
    resized to ``size`` as they were decoded are kept apart from the images as they are)."""
    root = cache_dir()
    if root is None:
        return load()
    key = _source_key(path, split) + ("" if size is None else f"-{size[0]}x{size[1]}")
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[:60] + f"-{split}-{key}"
    base = root / "decoded"
    meta_f, img_f, lab_f = (base / f"{stem}.{x}" for x in ("json", "images.npy", "labels.npy"))
    try:
        meta = json.loads(meta_f.read_text())
        if meta.get("key") != key or meta.get("version") != CACHE_FORMAT_VERSION:
            raise ValueError("stale")
        images = np.load(img_f, allow_pickle=False)
        labels = np.load(lab_f, allow_pickle=False) if meta["labelled"] else None
        if (
            images.dtype != np.uint8
            or list(images.shape) != meta["shape"]
            or (
                labels is not None
                and (labels.dtype != np.int64 or labels.shape != images.shape[:1])
            )
        ):
            raise ValueError("inconsistent")
        names = meta.get("names")
        if names is not None and (not isinstance(names, list) or len(names) != len(images)):
            raise ValueError("inconsistent")
        return ImageSet(images, labels, list(meta["classes"]), str(path), names)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        pass  # missing, stale or corrupt: rebuild
    ds = load()
    try:
        save_npy(img_f, ds.images)
        if ds.labels is not None:
            save_npy(lab_f, ds.labels)
        write_json(
            meta_f,
            {
                "version": CACHE_FORMAT_VERSION,
                "key": key,
                "source": str(path.resolve()),
                "split": split,
                "shape": list(ds.images.shape),
                "labelled": ds.labels is not None,
                "classes": ds.classes,
                "names": ds.names,
            },
        )
    except OSError as e:
        print(f"reprlab: warning: could not write the data cache in {base} ({e})", file=sys.stderr)
    return ds


# ---------------------------------------------------------------------------------------------
# Default data: the official CIFAR-10, downloaded once
# ---------------------------------------------------------------------------------------------

_OFFLINE_HINT = (
    "point reprlab at local files with --data PATH or the REPRLAB_DATA environment variable "
    f"(a {CIFAR10_ARCHIVE}, a {CIFAR10_FOLDER} folder, an image folder/tar or an .npz)"
)


def data_dir() -> Path:
    """Where the default CIFAR-10 is looked for and downloaded to."""
    env = os.environ.get("REPRLAB_DATA")
    if env:
        return Path(env).expanduser()
    base = cache_dir() or Path.home() / ".cache" / "reprlab"
    return base / "datasets"


def default_cifar10(split: str = "train") -> Path:
    """The source used when no ``--data`` is given: ``REPRLAB_DATA`` or the downloaded CIFAR-10.

    ``REPRLAB_DATA`` may name a data file/folder directly, or a folder holding
    ``cifar-10-batches-py/``, ``cifar-10-python.tar.gz`` (or this project's shared
    ``cifar10_train.tar.xz`` / ``cifar10_test_images.npz``); any other non-empty folder is loaded
    as data. A missing or empty folder is where CIFAR-10 is downloaded to.
    """
    d = data_dir()
    if d.is_file():
        return d
    for name in (CIFAR10_FOLDER, CIFAR10_ARCHIVE, _shared_name(split)):
        if (d / name).exists():
            return d / name
    if _cifar_folder(d) is not None:
        return d
    if os.environ.get("REPRLAB_DATA") and d.is_dir() and any(d.iterdir()):
        return d  # the user's own data folder (image folder): load it, never download into it
    return download_cifar10(d)


def _shared_name(split: str) -> str:
    """The file of ``split`` in the CIFAR-10 copy that this project's machines share."""
    return "cifar10_train.tar.xz" if split == "train" else "cifar10_test_images.npz"


def download_cifar10(dest: Path) -> Path:
    """Download ``cifar-10-python.tar.gz`` into folder ``dest`` (MD5-checked), return its path."""
    from tqdm import tqdm

    dest = Path(dest)
    target = dest / CIFAR10_ARCHIVE
    if target.is_file() and file_digest(target, "md5") == CIFAR10_MD5:
        return target
    try:
        resp = urllib.request.urlopen(CIFAR10_URL, timeout=30)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ReprlabError(
            f"could not download CIFAR-10 from {CIFAR10_URL} ({first_line(e)}); {_OFFLINE_HINT}"
        ) from None
    md5 = hashlib.md5()
    try:
        with resp, atomic_open(target, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc="CIFAR-10", file=sys.stderr
            ) as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
            if md5.hexdigest() != CIFAR10_MD5:
                raise ReprlabError(
                    f"{CIFAR10_URL}: downloaded file has MD5 {md5.hexdigest()}, expected "
                    f"{CIFAR10_MD5} (nothing kept; try again or {_OFFLINE_HINT})"
                )
    except (urllib.error.URLError, OSError) as e:
        raise ReprlabError(
            f"download of {CIFAR10_URL} failed ({first_line(e)}); {_OFFLINE_HINT}"
        ) from None
    return target


# ---------------------------------------------------------------------------------------------
# Splits and subsets
# ---------------------------------------------------------------------------------------------


def _class_indices(labels: np.ndarray) -> list[np.ndarray]:
    labels = np.asarray(labels)
    return [np.flatnonzero(labels == c) for c in np.unique(labels)]


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, where: str = "the data"
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx), each sorted: every class contributes ``val_fraction`` of its images.

    Reproducible by ``seed``; the two parts are disjoint and cover all indices.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ReprlabError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    groups = _class_indices(labels)
    counts = np.array([len(g) for g in groups])
    total = max(1, round(len(labels) * val_fraction))
    # a class never gives all its images to validation (training needs every class)
    n_val = _largest_remainder(counts * val_fraction, total, np.maximum(counts - 1, 0))
    if n_val.sum() == 0:
        raise ReprlabError(
            f"{where}: cannot split {len(labels)} images into training and validation (at "
            "least two images of one class are needed)"
        )
    train, val = [], []
    for g, k in zip(groups, n_val, strict=True):
        perm = rng.permutation(g)
        val.append(perm[:k])
        train.append(perm[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced subset of size ``n`` (equal share per class, as far as
    each class's size allows). Reproducible by ``seed``."""
    labels = np.asarray(labels)
    if n < 1 or n > len(labels):
        raise ReprlabError(f"subset size must be in 1..{len(labels)}, got {n}")
    rng = np.random.default_rng(seed)
    groups = _class_indices(labels)
    counts = np.array([len(g) for g in groups])
    take = np.zeros(len(groups), dtype=np.int64)
    left = n
    while left > 0:  # water-filling: share what is left among classes with images to spare
        open_ = np.flatnonzero(take < counts)
        share = np.full(len(open_), left // len(open_))
        share[rng.permutation(len(open_))[: left % len(open_)]] += 1
        add = np.minimum(share, counts[open_] - take[open_])
        take[open_] += add
        left -= int(add.sum())
    return np.sort(
        np.concatenate([rng.permutation(g)[:k] for g, k in zip(groups, take, strict=True)])
    )


_NOTES_SHOWN: set[str] = set()


def note_once(text: str) -> None:
    """Print ``text`` on stderr once per process (a pipeline's stages read the same data)."""
    if text not in _NOTES_SHOWN:
        _NOTES_SHOWN.add(text)
        print(text, file=sys.stderr)


def limit_images(ds: ImageSet, limit: int | None, seed: int) -> ImageSet:
    """The ``--limit`` subset of ``ds``: a stratified sample of ``limit`` images (reproducible by
    ``seed``). A limit at or above the number of images keeps them all, with a note on stderr,
    so that a quick preset (``--preset smoke``) also runs on a small data set."""
    if limit is None:
        return ds
    assert ds.labels is not None
    if limit >= len(ds):
        note = (
            f"reprlab: note: --limit {limit}: {ds.source} has {len(ds)} images of the "
            f"{len(ds.classes)} classes used; using all of them"
        )
        if limit > len(ds):
            note_once(note)
        return ds
    return ds.subset(stratified_subset(ds.labels, limit, seed))


def check_batch_size(batch_size: int, train: ImageSet) -> None:
    """Refuse a ``--batch_size`` larger than the training split ``train``."""
    if batch_size > len(train):
        raise ReprlabError(
            f"--batch_size {batch_size} is larger than the training split ({len(train)} images "
            f"of {train.source}); pass a smaller --batch_size"
        )


@dataclass
class RunImages:
    """A run's images: ``train`` and the held-out ``val`` (a stratified ``--val_fraction`` of the
    ``--limit`` subset), and the ``--test_data`` images to predict, if any."""

    train: ImageSet
    val: ImageSet
    test: ImageSet | None


def run_images(
    ds: ImageSet,
    cfg: Any,
    batch_size: int | None = None,
    why: str = "",
) -> RunImages:
    """What every mode does with its labelled images ``ds``, in one place: the ``--limit``
    subset, at least two classes (``why``: what needs them), the seeded stratified split,
    ``--batch_size`` against the training split, and the ``--test_data`` images, checked
    against the training images' size. ``cfg`` has ``limit``, ``seed``, ``val_fraction`` and
    ``test_data`` (a :class:`reprlab.config.RunConfig`)."""
    assert ds.labels is not None
    ds = limit_images(ds, cfg.limit, cfg.seed)
    present = np.unique(ds.labels)
    if len(present) < 2:
        found = f"only class {ds.classes[present[0]]!r}" if len(present) else "none"
        raise ReprlabError(
            f"{ds.source}: needs images of at least two classes{why}, found {found}"
        )
    tr_idx, va_idx = stratified_split(ds.labels, cfg.val_fraction, cfg.seed, str(ds.source))
    train = ds.subset(tr_idx)
    if batch_size is not None:
        check_batch_size(batch_size, train)
    test = None
    if cfg.test_data is not None:
        test = load_images(cfg.test_data, split="test")
        check_compatible(train, test)
    return RunImages(train, ds.subset(va_idx), test)


def _largest_remainder(quotas: np.ndarray, total: int, caps: np.ndarray) -> np.ndarray:
    base = np.minimum(np.floor(quotas).astype(np.int64), caps)
    order = np.argsort(-(quotas - np.floor(quotas)), kind="stable")
    for i in order:
        if base.sum() >= total:
            break
        if base[i] < caps[i]:
            base[i] += 1
    return base


def select_classes(ds: ImageSet, classes: Sequence[int | str]) -> ImageSet:
    """Keep only ``classes`` (names or label indices), relabelled 0..k-1 in the given order."""
    if ds.labels is None:
        raise ReprlabError(f"{ds.source}: has no labels, cannot select classes")
    chosen: list[int] = []
    for c in classes:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= int(c) < len(ds.classes):
                raise ReprlabError(
                    f"{ds.source}: class index {c} out of range 0..{len(ds.classes) - 1}"
                )
            idx = int(c)
        elif isinstance(c, str) and c in ds.classes:
            idx = ds.classes.index(c)
        elif isinstance(c, str) and c.isdigit() and int(c) < len(ds.classes):
            idx = int(c)
        else:
            raise ReprlabError(
                f"{ds.source}: unknown class {c!r} (classes: {', '.join(ds.classes)})"
            )
        if idx in chosen:
            raise ReprlabError(f"{ds.source}: class {c!r} selected twice")
        chosen.append(idx)
    if not chosen:
        raise ReprlabError(f"{ds.source}: no classes selected")
    mapping = np.full(len(ds.classes), -1, dtype=np.int64)
    mapping[chosen] = np.arange(len(chosen))
    new = mapping[ds.labels]
    keep = np.flatnonzero(new >= 0)
    if len(keep) == 0:
        raise ReprlabError(f"{ds.source}: no images of the selected classes")
    kept = ds.subset(keep)
    return ImageSet(kept.images, new[keep], [ds.classes[i] for i in chosen], ds.source, kept.names)


def check_inputs(configs: Sequence[dict[str, Any]]) -> None:
    """Read each distinct ``data`` (labelled) and ``test_data`` of ``configs`` once, raising
    :class:`ReprlabError` for a bad one: pipeline and sweep call this before making their
    folder, so bad input writes nothing. ``None`` (the default CIFAR-10) is not checked."""
    seen: set[tuple[str, str]] = set()
    for cfg in configs:
        for key, split in (("data", "train"), ("test_data", "test")):
            src = cfg.get(key)
            if src is None or (key, str(src)) in seen:
                continue
            seen.add((key, str(src)))
            ds = load_images(src, require_labels=key == "data", split=split)
            del ds


def check_image_shape(
    images: np.ndarray, shape: tuple[int, ...], where: str, model: str = "the model", hint: str = ""
) -> None:
    """ReprlabError naming ``where`` unless ``images`` are ``(N, *shape)``, (H, W, C) images as
    ``model`` was trained on; ``hint`` ends the message (say, the flag that would fix it)."""
    got = np.shape(images)
    if len(got) != 4 or tuple(got[1:]) != tuple(shape):
        have = "x".join(map(str, got[1:])) if len(got) == 4 else str(got)
        raise ReprlabError(
            f"{where}: images are {have} (HxWxC) but {model} was trained on "
            f"{'x'.join(map(str, shape))} images{hint}"
        )


def check_compatible(train: ImageSet, test: ImageSet) -> None:
    """Raise :class:`ReprlabError` naming ``test.source`` unless its H, W, C match train's."""
    if train.images.shape[1:] != test.images.shape[1:]:
        h, w, c = test.images.shape[1:]
        th, tw, tc = train.images.shape[1:]
        raise ReprlabError(
            f"{test.source}: images are {h}x{w}x{c} (HxWxC) but the training images "
            f"({train.source}) are {th}x{tw}x{tc}"
        )


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (float input is returned as float32 unchanged)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if images.dtype.kind == "f":
        return images.astype(np.float32, copy=False)
    raise TypeError(f"to_float: expected uint8 or float images, got {images.dtype}")


def gamma_encode(x: np.ndarray, gamma: float | Sequence[float]) -> np.ndarray:
    """Float images in [0, 1] -> ``x ** gamma`` (float32; ``gamma == 1`` returns ``x``).

    A per-pixel re-encoding of intensity, like the sRGB curve the stored pixels already carry:
    ``gamma < 1`` spreads the dark values apart and compresses the bright ones. A linear model
    on the re-encoded pixels is still linear in its inputs; only what "linear" means changes.

    Several exponents give each pixel several features, concatenated along the last (channel)
    axis: ``(0.5, 1, 2)`` turns C channels into 3C. A linear model on them is a sum of one
    learned curve ``a x**0.5 + b x + c x**2`` per pixel and channel (a generalised additive
    model of the pixels), with no mixing between pixels beyond the sum.
    """
    x = np.asarray(x, dtype=np.float32)
    if isinstance(gamma, Sequence):
        if len(gamma) == 1:
            return gamma_encode(x, gamma[0])
        return np.concatenate([gamma_encode(x, g) for g in gamma], axis=-1)
    if gamma == 1.0:
        return x
    return np.power(np.maximum(x, 0.0), np.float32(gamma))


def random_translate(
    rows: np.ndarray, shape: tuple[int, int, int], max_shift: int, rng: np.random.Generator
) -> np.ndarray:
    """Translate each flattened HWC image in ``rows`` (N, H*W*C) by a random offset of up to
    ``max_shift`` pixels in each direction, filling the border by reflection (as the neural
    modes' translate-crop); returns a new (N, H*W*C) array."""
    h, w, c = shape
    n = len(rows)
    if max_shift <= 0 or n == 0:
        return rows
    p, side = int(max_shift), 2 * int(max_shift) + 1
    padded = np.pad(rows.reshape(n, h, w, c), ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    offset = rng.integers(0, side * side, n)  # (dy, dx) = divmod(offset, side)
    out = np.empty((n, h, w, c), dtype=rows.dtype)
    for o in np.unique(offset):  # one slice copy per offset: 6x faster than a fancy gather
        sel = np.flatnonzero(offset == o)
        dy, dx = divmod(int(o), side)
        out[sel] = padded[sel, dy : dy + h, dx : dx + w]
    return out.reshape(n, -1)


class Standardizer:
    """Per-channel (last axis) standardisation with statistics of the TRAINING data only."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean_ = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std_ = None if std is None else np.asarray(std, dtype=np.float32)

    def fit(self, x: np.ndarray) -> Standardizer:
        """Fit on float NHWC (or (N, D)) training data: one mean/std per last-axis channel."""
        x = np.asarray(x)
        flat = x.reshape(-1, x.shape[-1])
        total = np.zeros(flat.shape[1])
        squares = np.zeros(flat.shape[1])
        for start in range(0, len(flat), 1 << 20):  # float64 sums in chunks: no full-size temp
            chunk = flat[start : start + (1 << 20)].astype(np.float64)
            total += chunk.sum(axis=0)
            squares += np.square(chunk).sum(axis=0)
        mean = total / len(flat)
        std = np.sqrt(np.maximum(squares / len(flat) - mean**2, 0.0))
        self.mean_ = mean.astype(np.float32)
        self.std_ = np.where(std < 1e-6, 1.0, std).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean_ is None or self.std_ is None:
            raise RuntimeError("Standardizer.transform called before fit")
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != len(self.mean_):
            raise ReprlabError(
                f"data has {x.shape[-1]} channels but the standardizer was fit on {len(self.mean_)}"
            )
        return (x - self.mean_) / self.std_

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).transform(x)

    def to_dict(self) -> dict[str, list[float]]:
        if self.mean_ is None or self.std_ is None:
            raise RuntimeError("Standardizer.to_dict called before fit")
        return {"mean": [float(v) for v in self.mean_], "std": [float(v) for v in self.std_]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        try:
            return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))
        except (KeyError, TypeError, ValueError) as e:
            raise ReprlabError(f"invalid standardizer in model file ({first_line(e)})") from None


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def grayscale(x: np.ndarray) -> np.ndarray:
    """NHWC RGB -> NHW1 luma (ITU-R 601). uint8 in -> uint8 out (rounded); float -> float32."""
    x = np.asarray(x)
    if x.shape[-1] == 1:
        return x
    if x.shape[-1] != 3:
        raise ValueError(f"grayscale: expected 1 or 3 channels, got shape {x.shape}")
    y = (x.astype(np.float32) @ _LUMA)[..., None]
    if x.dtype == np.uint8:
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return y


def resize_images(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 NHWC images resized to ``height`` x ``width`` (PIL, bicubic with antialiasing;
    the aspect ratio is not kept)."""
    from PIL import Image

    out = np.empty((len(images), height, width, images.shape[3]), dtype=np.uint8)
    for i, img in enumerate(images):
        im = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
        arr = np.asarray(im.resize((width, height), Image.Resampling.BICUBIC))
        out[i] = arr.reshape(height, width, -1)
    return out


def flatten(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D)."""
    x = np.asarray(x)
    return x.reshape(len(x), -1)
