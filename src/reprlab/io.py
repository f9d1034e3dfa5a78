"""Every file reprlab writes goes through here: atomic writes, run folders, checkpoints.

A file is always written to a temporary name in the same folder, flushed to disk, then renamed
over its final name, so a crash (or a full disk) never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from io import StringIO
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from reprlab.errors import ReprlabError, first_line, one_line

# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------

_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp alone makes files owner-only


#: A temporary file's name: ``.<final name>.reprlab-<random><suffix>``, distinctive enough that
#: cleaning up after a killed write never takes a user's own hidden file for one.
_TEMP_MARK = "reprlab-"


def check_parents(path: Path) -> None:
    """Refuse a path below a file (``--out notes.txt/run``) in one line naming that file, before
    anything is written (``mkdir`` would say "File exists" or "Not a directory")."""
    for parent in path.parents:  # the nearest first
        if parent.exists():
            if not parent.is_dir():
                raise ReprlabError(f"{path}: {parent} is a file, not a folder")
            return


def check_out_folder(
    path: Path, shown: str | None = None, configs: Sequence[dict[str, Any]] = ()
) -> None:
    """Refuse an ``--out`` folder that cannot be one: a file, a path below a file, or a folder
    inside an image folder that its runs read (``configs``' ``data`` or ``test_data``), whose
    plots the next read would take for images (``shown``: how the error names it)."""
    check_parents(path)
    if path.exists() and not path.is_dir():
        raise ReprlabError(f"{shown or path}: exists and is not a folder")
    where = path.expanduser().resolve()
    for config in configs:
        for key in ("data", "test_data"):
            images = input_path(config, key)
            inside = images is not None and (where == images or images in where.parents)
            if inside and images.is_dir():
                raise ReprlabError(
                    f"{shown or path}: is inside the --{key} folder {images}, whose next read "
                    "would take the run's plots for images (choose another --out)"
                )


def _temporary(path: Path, suffix: str) -> tuple[int, str]:
    """A new temporary file next to ``path`` (its errors name ``path``, not the temporary)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_TEMP_MARK}", suffix=suffix,
                                   dir=path.parent)  # fmt: skip
    except OSError as e:
        e.filename = str(path)
        raise
    os.fchmod(fd, _FILE_MODE)
    return fd, tmp


def _write_target(path: Path) -> Path:
    """Where writing ``path`` goes: through a symbolic link to the file it names."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _not_a_file(path: Path) -> bool:
    """``path`` exists and is a device, pipe or socket (``/dev/stdout``): written in place."""
    return path.exists() and not path.is_file() and not path.is_dir()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync and rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was. A symbolic
    link is written through (the file it names is replaced, the link kept); a device or pipe
    (``--out /dev/stdout``) is written directly.
    """
    path = Path(path)
    if _not_a_file(path):
        with open(path, mode) as f:
            yield f
        return
    path = _write_target(path)
    fd, tmp = _temporary(path, ".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_file(e, path)
        raise


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` (for libraries that want a file name), then rename to ``path``."""
    path = _write_target(Path(path))
    fd, tmp = _temporary(path, path.suffix or ".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_file(e, path)
        raise


def _name_file(e: BaseException, path: Path) -> None:
    """A failed write (disk full, file too large) names the file it was writing."""
    if isinstance(e, OSError) and e.filename is None:
        e.filename = str(path)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, to_json(obj))


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object (every JSON file reprlab writes holds one)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReprlabError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReprlabError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ReprlabError(f"{path}: holds a JSON {type(obj).__name__}, not an object")
    return obj


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite a whole JSON-lines file atomically (metrics logs are small)."""
    write_text(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ReprlabError(f"{path}: not a text file of JSON lines ({e.reason})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReprlabError(f"{path}: line {n} is not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise ReprlabError(f"{path}: line {n} is not a JSON object")
        rows.append(row)
    return rows


def save_npz(path: str | Path, **arrays: Any) -> None:
    """Save arrays to ``.npz`` atomically; strings are stored as unicode arrays (no pickles)."""
    clean = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in clean.items():
        if v.dtype == object:
            raise TypeError(f"save_npz: {k} would need a pickle")
    with atomic_open(path, "wb") as f:
        np.savez(f, **clean)


def read_npz(path: str | Path, what: str = "model") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` written by :func:`save_npz`, read without pickles."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        # an .npz holding object arrays: numpy's advice (allow_pickle=True) must never be taken
        if "pickle" in str(e) and zipfile.is_zipfile(path):
            raise ReprlabError(
                f"{path}: not a reprlab {what} file (it holds Python objects, which are never "
                "loaded: a pickle can run code)"
            ) from None
        raise ReprlabError(f"{path}: not a readable .npz {what} ({one_line(e, 200)})") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise ReprlabError(f"{path}: not a readable .npz {what} ({one_line(e, 200)})") from None


def npz_flag(arrays: dict[str, np.ndarray], key: str, path: str | Path, default: bool) -> bool:
    """A true/false field of a model file read by :func:`read_npz`: one boolean (or 0/1);
    files written before the field existed lack it and get ``default``."""
    if key not in arrays:
        return default
    v = np.asarray(arrays[key])
    if v.shape != () or v.dtype.kind not in "biu" or v.item() not in (0, 1):
        raise ReprlabError(f"{path}: {key} must be true or false, got {_short(v.tolist())}")
    return bool(v)


def check_linear_arrays(
    path: str | Path,
    W: np.ndarray,
    b: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    n_classes: int,
    binary: bool = False,
) -> None:
    """Refuse a linear model file (``W`` inputs x outputs, ``b``, the inputs' standardising
    ``mean`` and ``std``) whose outputs do not match its ``n_classes`` class names (a binary
    model: one output, two classes), whose mean and std differ in length, or whose numbers are
    not finite, or not positive for ``std``: a damaged or hand-edited file would otherwise give
    labels without names, or the same label for every image."""
    arrays = {"W": W, "b": b, "mean": mean, "std": std}
    for k, v in arrays.items():
        if np.asarray(v).dtype.kind not in "fiu":
            raise ReprlabError(f"{path}: {k} must hold numbers, got {np.asarray(v).dtype}")
    outputs = W.shape[1] if W.ndim == 2 else -1
    if outputs != (1 if binary else n_classes) or n_classes < 2 or (binary and n_classes != 2):
        want = "1 output for 2 classes" if binary else "one output for each of its classes"
        raise ReprlabError(
            f"{path}: the model has {outputs} output(s) and {n_classes} class names "
            f"(a {'binary' if binary else 'multi-class'} model needs {want})"
        )
    if np.shape(mean) != np.shape(std):
        raise ReprlabError(f"{path}: mean and std differ in shape")
    for k, v in arrays.items():
        if not np.all(np.isfinite(v)):
            raise ReprlabError(f"{path}: {k} holds NaN or infinite values")
    if not np.all(np.asarray(std) > 0):
        raise ReprlabError(f"{path}: std must be positive")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)


def file_digest(path: str | Path, algorithm: str = "blake2b") -> str:
    """A hash of a file's bytes: by default a short one (a saved array not changed since it
    was recorded); ``algorithm="md5"`` where a published checksum is MD5 (CIFAR-10's)."""
    h = hashlib.blake2b(digest_size=20) if algorithm == "blake2b" else hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load_npy(path: str | Path) -> np.ndarray:
    """An ``.npy`` array read without pickles; a one-line error naming the file otherwise."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ReprlabError(f"{path}: not a readable .npy array ({one_line(e, 200)})") from None


def check_output_file(path: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` file name that names a folder, or a file the user already has unless
    ``--overwrite`` (``predict``, ``report``)."""
    check_parents(path)
    if path.is_dir():
        raise ReprlabError(f"{path}: is a folder (--out needs a file name)")
    if path.is_file() and not overwrite:  # a device or pipe (/dev/stdout) is written to
        raise ReprlabError(f"{path}: already exists (choose another --out or pass --overwrite)")


def write_predictions(path: str | Path, labels: np.ndarray) -> None:
    """The report's leaderboard format: one integer label per line, row i for image i."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError("predictions must be a 1-D integer array")
    write_text(path, "".join(f"{int(v)}\n" for v in labels))


def write_named_predictions(
    path: str | Path, names: list[str], labels: np.ndarray, classes: list[str]
) -> None:
    """``predict --names``: CSV rows ``file,label,class`` under a header, one per image in the
    order of the leaderboard format (``labels`` as there, ``classes`` their names)."""
    import csv

    text = StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "label", "class"])
    writer.writerows(zip(names, (int(v) for v in labels), classes, strict=True))
    write_text(path, text.getvalue())


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    fmt = Path(path).suffix.lstrip(".") or "png"
    with warnings.catch_warnings():  # a class name in a script the font lacks: a box, no noise
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Checkpoints (PyTorch): never unpickle arbitrary objects
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save a checkpoint dict (tensors, numbers, strings, lists, dicts) atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: a pickle that tries to run code is refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ReprlabError(f"{path}: checkpoint not found")
    with path.open("rb") as fh:
        head = fh.read(8)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip, or a pickle
        kind = (
            "the file is empty" if not head
            else "it is a NumPy .npy array" if head.startswith(b"\x93NUMPY")
            else "it is text" if head.isascii() and head.decode().isprintable()
            else "not a PyTorch file"
        )  # fmt: skip
        raise ReprlabError(f"{path}: not a readable reprlab checkpoint ({kind})")
    try:
        with warnings.catch_warnings():  # torch warns about legacy formats before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt / unsafe files
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise ReprlabError(
                f"{path}: holds Python objects besides tensors and plain data; refused, and "
                "nothing in it was run (a pickle can run code)"
            ) from None
        raise ReprlabError(
            f"{path}: not a readable reprlab checkpoint ({first_line(e)})"
        ) from None
    if not isinstance(state, dict):
        raise ReprlabError(
            f"{path}: not a reprlab checkpoint (top level is {type(state).__name__})"
        )
    return state


def check_model_meta(ck: dict[str, Any], path: str | Path) -> None:
    """Refuse a model file (``encoder.pt``, ``model.pt``) whose description of its inputs is not
    what reprlab writes: ``image_shape`` (H, W, C), per-channel ``mean``/``std``, ``classes``."""

    def numbers(v: Any, n: int) -> bool:
        return isinstance(v, (list, tuple)) and len(v) == n and all(
            isinstance(x, (int, float)) and math.isfinite(x) for x in v
        )

    shape = ck.get("image_shape")
    ok = (
        numbers(shape, 3)
        and all(isinstance(v, int) and v > 0 for v in shape)
        and numbers(ck.get("mean"), shape[2])
        and numbers(ck.get("std"), shape[2])
        and isinstance(ck.get("classes"), (list, tuple))
        and all(isinstance(c, str) for c in ck["classes"])
        and isinstance(ck.get("kwargs", {}), dict)
    )
    if not ok:
        raise ReprlabError(
            f"{path}: damaged model file (its image_shape, mean, std, classes or kwargs are not "
            "what reprlab writes)"
        )


def check_finite_weights(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a model file whose floating-point weights hold NaN or infinite values (a
    damaged file, or one saved from a diverged run): its every prediction would be one class."""
    import torch

    bad = [
        k for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(v.isfinite().all())
    ]  # fmt: skip
    if bad:
        raise ReprlabError(f"{path}: weights hold NaN or infinite values ({bad[0]})")


def cpu_weights(model: Any) -> dict[str, Any]:
    """A module's state dict as contiguous CPU tensors, as model files store it."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def load_model(
    path: Path, fmt: str, build: Callable[[dict[str, Any]], Any], kind: str, expected: str
) -> tuple[Any, dict[str, Any]]:
    """Load a model file (``encoder.pt``, ``model.pt``) whose ``format`` tag is ``fmt``:
    ``(module, meta)``, the module built by ``build(meta)`` with the file's weights, in eval
    mode; ``meta`` is the file without the weights. A file of another kind (``expected`` says
    which is), damaged metadata, weights that do not fit or are not finite: one-line errors
    naming the file and the ``kind`` of model."""
    ck = load_checkpoint(path)
    if ck.get("format") != fmt:
        raise ReprlabError(f"{path}: not {expected}")
    check_model_meta(ck, path)
    try:
        model = build(ck)
        model.load_state_dict(ck["state_dict"])
    except (KeyError, RuntimeError, ReprlabError, TypeError, ValueError) as e:
        raise ReprlabError(f"{path}: {kind} does not load ({one_line(e, 200)})") from None
    check_finite_weights(ck["state_dict"], path)
    model.eval()
    return model, {k: v for k, v in ck.items() if k != "state_dict"}


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Versions, threads and device: recorded with every run."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
    }
    if "torch" in sys.modules:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        from reprlab.train import cpu_has_native_bf16

        env["cpu_bf16"] = cpu_has_native_bf16()  # --autocast on a CPU: bf16 only if native
    from reprlab import __version__

    env["reprlab"] = __version__
    return env


def default_run_dir(mode: str) -> Path:
    """A fresh folder name under ``runs/``: never an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{mode}-{stamp}"
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


# ---------------------------------------------------------------------------------------------
# One process per folder
# ---------------------------------------------------------------------------------------------

LOCK_NAME = ".reprlab.lock"
_HELD: dict[Path, IO[str]] = {}  # folders this process holds, with their open lock files


def hold_folder(path: Path) -> None:
    """Hold ``path`` (a run, pipeline or sweep folder) for the life of this process.

    A second reprlab process given the same folder (say ``make run`` started twice) is refused
    with a one-line error, instead of resuming from and overwriting the first one's checkpoints.
    The lock is the kernel's advisory ``flock`` on ``path/.reprlab.lock``: it dies with its
    process, so a crash or SIGKILL never leaves a folder locked. Where ``flock`` does not exist
    (Windows) or the file system refuses it, folders are not guarded.
    """
    key = path.resolve()
    if key in _HELD:
        return
    try:
        import fcntl
    except ImportError:
        return
    f = open(key / LOCK_NAME, "a")  # noqa: SIM115 - kept open: the lock lives with the file
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ReprlabError(
            f"{path}: in use by another reprlab process (wait for it to finish, or choose "
            "another --out)"
        ) from None
    except OSError:
        f.close()
        return
    _HELD[key] = f


def release_folder(path: Path) -> None:
    """Give up this process's hold on ``path`` (no-op if it holds none)."""
    f = _HELD.pop(path.resolve(), None)
    if f is not None:
        f.close()


def holds_files(path: Path) -> bool:
    """True if folder ``path`` holds anything besides reprlab's lock and stale temporaries."""
    return path.is_dir() and any(
        f.name != LOCK_NAME and not _TEMP_NAME.fullmatch(f.name) for f in path.iterdir()
    )


def reprlab_record(path: Path, kind: str) -> dict[str, Any] | None:
    """The record reprlab keeps in a folder, read from ``path``: a run's ``config.json``
    (``kind="run"``), a ``sweep.json`` or a ``pipeline.json``; None where the file is missing,
    not JSON or not such a record. A folder without one is not reprlab's and is never deleted,
    not even with ``--overwrite``."""
    from reprlab.modes import MODES

    if not path.is_file():
        return None
    try:
        rec = read_json(path)
    except ReprlabError:
        return None
    ok = {
        "run": lambda r: r.get("mode") in MODES and isinstance(r.get("config"), dict),
        "sweep": lambda r: r.get("mode") in MODES and isinstance(r.get("grid"), dict),
        "pipeline": lambda r: isinstance(r.get("preset"), str)
        and isinstance(r.get("stages"), dict),
    }[kind](rec)
    return rec if ok else None


def remove_folder(path: Path) -> None:
    """``--overwrite``: delete ``path``, unless another reprlab process is using it or it holds
    the current working folder."""
    here = Path.cwd().resolve()
    if here == path.resolve() or path.resolve() in here.parents:
        raise ReprlabError(f"{path}: will not delete the current folder or one above it")
    hold_folder(path)
    release_folder(path)
    shutil.rmtree(path)


class RunDir:
    """A run folder: ``config.json`` first, then metrics, plots, model, summary.

    ``RunDir.open`` refuses a folder that holds another configuration's run unless ``overwrite``;
    a folder with the same configuration is reused (resume / skip if finished).
    """

    #: The folder the last :meth:`open` of this process made or reused (the CLI names it in its
    #: advice after Ctrl-C: a run without ``--out`` resumes only with the folder it chose).
    last_opened: ClassVar[Path | None] = None

    def __init__(self, path: Path, mode: str, config: dict[str, Any]):
        self.path = path
        self.mode = mode
        self.config = config

    @classmethod
    def open(
        cls,
        path: str | Path | None,
        mode: str,
        config: dict[str, Any],
        overwrite: bool = False,
        resume: bool | None = None,
    ) -> RunDir:
        path = Path(path) if path is not None else default_run_dir(mode)
        cfg_file = path / "config.json"
        check_out_folder(path, configs=[config])
        if holds_files(path):
            old = reprlab_record(cfg_file, "run")
            if old is None:  # never deleted, even with --overwrite: not ours
                raise ReprlabError(
                    f"{path}: folder exists and is not a reprlab run (choose another --out)"
                )
            if overwrite:
                remove_folder(path)
            else:
                if old.get("mode") != mode:
                    raise ReprlabError(
                        f"{path}: holds a {old.get('mode')} run, not {mode} "
                        "(choose another --out, or pass --overwrite)"
                    )
                diff = config_diff(old.get("config") or {}, comparable(config))
                if diff:
                    raise ReprlabError(
                        f"{path}: holds a run with another configuration ({diff}); "
                        "choose another --out, or pass --overwrite"
                    )
                _check_same_inputs(path, old.get("inputs") or {}, input_files(config))
        run = cls(path, mode, config)
        if resume is False and run.file("checkpoint.pt").is_file() and not run.finished:
            raise ReprlabError(
                f"{path}: holds an interrupted run of this configuration; pass --resume to "
                "continue it, or --overwrite to start again"
            )
        path.mkdir(parents=True, exist_ok=True)
        hold_folder(path)
        RunDir.last_opened = path
        remove_stale_temporaries(path)
        if not cfg_file.exists():
            write_json(
                cfg_file,
                {
                    "mode": mode,
                    "config": comparable(config),
                    "inputs": input_files(config),
                    "environment": environment(),
                },
            )
        return run

    @classmethod
    def finished_summary(
        cls, path: str | Path | None, mode: str, config: dict[str, Any], overwrite: bool = False
    ) -> dict[str, Any] | None:
        """The summary of this very run if ``path`` already holds it finished (then the mode has
        nothing to do), else None. Raises like :meth:`open` for a folder of another run."""
        if path is None or overwrite or not (Path(path) / "summary.json").is_file():
            return None
        run = cls.open(path, mode, config)
        if not run.finished:
            return None
        print(f"{mode}: {run.path} already holds this finished run; nothing to do")
        return read_json(run.file("summary.json"))

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def finished(self) -> bool:
        """True once ``summary.json`` exists with status ``finished``."""
        f = self.file("summary.json")
        return f.exists() and read_json(f).get("status") == "finished"

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.file("summary.json"), summary)


def input_files(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The inputs a run reads (``data``, or ``REPRLAB_DATA`` when it has none, and
    ``test_data``): absolute path, and size in bytes (of a folder: of all the files in it), so
    that a rerun of the same command line on another file or folder of the same name, or on a
    folder whose images changed, is not taken for it."""
    out = {}
    for key in ("data", "test_data"):
        p = input_path(config, key)
        if p is not None:
            out[key] = {"path": str(p), "bytes": _size(p)}
    return out


def input_path(config: dict[str, Any], key: str) -> Path | None:
    """The absolute path ``config[key]`` names (``data`` without a value: ``REPRLAB_DATA``),
    where it exists; else None."""
    value = config.get(key)
    if key == "data" and key in config and not value:  # the default: REPRLAB_DATA, if set
        value = os.environ.get("REPRLAB_DATA")
    if value and Path(value).expanduser().exists():
        return Path(value).expanduser().resolve()
    return None


def walk_files(folder: Path) -> Iterator[str]:
    """Every file under ``folder``, in sorted order, as the image-folder reader sees them:
    folders that are links are followed (a data set assembled from elsewhere), but none is
    walked twice (a link back up the tree)."""
    seen: set[str] = set()
    for dirpath, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            yield os.path.join(dirpath, name)


def _size(path: Path) -> int:
    """A file's size, or the total size of the files under a folder (:func:`walk_files`)."""
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for file in walk_files(path):
        with contextlib.suppress(OSError):  # a dangling link: the reader reports it
            total += os.stat(file).st_size
    return total


def _check_same_inputs(
    path: Path, old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]
) -> None:
    """Refuse to resume or reuse a run on inputs of another size (moved files and folders are
    fine; runs of releases before v13 stored no size for a folder, which is then not compared)."""
    for key in old.keys() & new.keys():
        if None not in (old[key].get("bytes"), new[key]["bytes"]) and (
            old[key]["bytes"] != new[key]["bytes"]
        ):
            raise ReprlabError(
                f"{path}: holds a run on another --{key} ({old[key].get('path')}, "
                f"{old[key].get('bytes')} bytes; now {new[key]['path']}, {new[key]['bytes']} "
                "bytes); choose another --out, or pass --overwrite"
            )


_TEMP_NAME = re.compile(
    rf"\.(?P<final>.+)\.{_TEMP_MARK}[a-z0-9_]{{8}}(\.tmp|\.[A-Za-z0-9]+)"
)


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Delete the hidden temporaries (``.<name>.reprlab-<random>.tmp``) that a killed process
    left in a run folder (:func:`atomic_open` removes them itself on any other failure)."""
    removed = []
    for f in folder.iterdir():
        if _TEMP_NAME.fullmatch(f.name) and f.is_file():
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed.append(f.name)
    return removed


#: Flags that say where and how a run is run, not what it computes: the folder and the
#: run-control switches (never stored in a run's record; pipeline and sweep set them for each
#: run themselves), and the progress bars and checkpoint interval (stored, never compared: a
#: run started with --no-progress resumes without it, and one checkpointed every 100
#: iterations resumes, to the same weights, checkpointing every 50).
RUN_CONTROL = frozenset({"out", "overwrite", "resume"})
DISPLAY_ONLY = frozenset({"progress", "checkpoint_every"})

#: Flags that name a file or folder: two spellings of one path are one setting.
PATH_KEYS = ("data", "test_data", "encoder_path")

#: Flags added since runs were first stored, each with the value that does what the releases
#: before it did: a stored configuration without the flag is the one with this value (so the
#: same command still resumes, or finds finished, a run of an earlier release).
ADDED_FLAGS: dict[str, Any] = {
    "time_budget": 0.0,
    "reuse_embeddings": True,
    "early_stop_from": 0.0,  # v19
}


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys in which two stored configurations differ, in order. Not differences: a number
    that an earlier release stored where a one-item list stands now, and two spellings of one
    existing path in ``PATH_KEYS``, and a flag of ``ADDED_FLAGS`` absent on one side and at
    its neutral value on the other, nor the progress bars and checkpoint interval
    (``DISPLAY_ONLY``)."""
    return [
        k
        for k in dict.fromkeys([*old, *new])
        if k not in DISPLAY_ONLY
        and not _same_setting(
            old.get(k, ADDED_FLAGS.get(k, _MISSING)), new.get(k, ADDED_FLAGS.get(k, _MISSING))
        )
        and not (k in PATH_KEYS and _same_path(old.get(k), new.get(k)))
    ]


def _same_path(old: Any, new: Any) -> bool:
    """``old`` and ``new`` name the same existing file or folder (``../data.npz`` typed in one
    run, ``/home/me/data.npz`` in the next). A relative ``old`` is read from the current folder,
    so a command run elsewhere stays another configuration unless typed alike."""
    if not (isinstance(old, str) and isinstance(new, str)):
        return False
    try:
        a, b = Path(old).expanduser(), Path(new).expanduser()
        return a.exists() and a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # unreadable, or a symlink loop
        return False


def config_diff(old: dict[str, Any], new: dict[str, Any], most: int = 3) -> str:
    """``"lr 0.1 -> 0.5, warmup_frac new"``: the first keys in which two configurations differ
    ("" when none does)."""
    parts = _differences(old, new)
    more = f" and {len(parts) - most} more" if len(parts) > most else ""
    return ", ".join(parts[:most]) + more


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``config_diff``'s items; nested records (a sweep's ``base``) by dotted key."""
    parts = []
    for k in differing_keys(old, new):
        name = prefix + k
        if k not in old and k in ADDED_FLAGS:  # the earlier release's behaviour, by its value
            parts.append(f"{name} {_short(ADDED_FLAGS[k])} (earlier release) -> {_short(new[k])}")
        elif k not in old:
            parts.append(f"{name} new")
        elif k not in new:
            parts.append(f"{name} gone")
        elif isinstance(old[k], dict) and isinstance(new[k], dict):
            parts += _differences(old[k], new[k], name + ".")
        else:
            parts.append(f"{name} {_short(old[k])} -> {_short(new[k])}")
    return parts


_MISSING = object()


def _same_setting(old: Any, new: Any) -> bool:
    """Equal, or a one-item list now where an earlier release stored the number itself (a flag
    that became list-valued, as ``--gamma`` did: ``0.25`` and ``[0.25]`` are one setting), also
    inside nested records (a sweep's ``base`` flags and ``grid`` values)."""
    if old == new:
        return True
    if isinstance(old, dict) and isinstance(new, dict):
        return not differing_keys(old, new)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return all(map(_same_setting, old, new))
    return isinstance(new, list) and len(new) == 1 and _same_setting(old, new[0])


def _short(v: Any, width: int = 40) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= width else text[: width - 3] + "..."


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as JSON would store it (tuples become lists), minus ``RUN_CONTROL``."""
    return json.loads(to_json({k: v for k, v in config.items() if k not in RUN_CONTROL}))
