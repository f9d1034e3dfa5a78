"""Thin command line over the library: parse flags into a config, call the mode, report errors.

Every user error (:class:`ReprlabError`) is one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from reprlab import __version__, modes
from reprlab.config import ArgParser, add_arguments, explicit_args, field_types
from reprlab.errors import ReprlabError, Terminated, TrainingFailed, one_line
from reprlab.io import RunDir
from reprlab.modes import MODES, TOOLS


def _parser(command: str | None) -> argparse.ArgumentParser:
    p = ArgParser(prog="reprlab", description="Learn image representations and measure them.")
    p.add_argument("--version", action="version", version=f"reprlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgParser)
    for name, mode in MODES.items():
        sp = sub.add_parser(name, help=mode.help, description=mode.help)
        if name == command:
            cls, _ = mode.load()
            if getattr(cls, "PRESETS", None):
                sp.add_argument(
                    "--preset",
                    choices=sorted(cls.PRESETS),
                    help=f"starting configuration (default: {cls.DEFAULT_PRESET})",
                )
            add_arguments(sp, cls)
    for name, (help_, module) in TOOLS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(module).add_arguments(sp)
    return p


def _terminated(signum: int, frame: object) -> None:
    raise Terminated  # SIGTERM (kill, a job scheduler) ends a command as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is not threading.main_thread():  # signals: main thread only
        return _main(argv)
    # A file-size limit (ulimit -f) should raise an OSError we can report, not kill us.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # SIGTERM while loading data or predicting, as in training (where the loop saves first):
    # one line and exit 143 (Ctrl-C: 130), no half-written file
    old_term = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _main(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        ns = _parser(command).parse_args(argv)
        if ns.command is None:
            _parser(None).print_help()
            return 2
        if ns.command in TOOLS:
            return int(importlib.import_module(TOOLS[ns.command][1]).main(ns) or 0)
        cls, _ = MODES[ns.command].load()
        given = modes.with_inherited(ns.command, explicit_args(ns, cls))
        RunDir.last_opened = None  # the run's folder, once made (Ctrl-C's advice names it)
        modes.run_mode(ns.command, given, getattr(ns, "preset", None))
        return 0
    except ReprlabError as e:
        print(f"reprlab: error: {one_line(e)}", file=sys.stderr)
        return 2
    except TrainingFailed as e:
        print(f"reprlab: training failed: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"reprlab: interrupted ({_after_interrupt(command, argv)})", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except MemoryError as e:  # numpy: "Unable to allocate 3 GiB for an array with shape ..."
        print(f"reprlab: error: out of memory ({one_line(e) or 'MemoryError'}); try a "
              "smaller --batch_size or --limit", file=sys.stderr)
        return 1
    except RuntimeError as e:  # torch's out-of-memory errors are RuntimeErrors
        text = str(e).lower()
        if "out of memory" not in text and "can't allocate memory" not in text:
            raise
        print(f"reprlab: error: out of memory ({one_line(e, 200)}); try a smaller "
              "--batch_size, --z_dim or --hidden", file=sys.stderr)  # fmt: skip
        return 1
    except OSError as e:  # disk full, file too large, permission denied
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"reprlab: error: {where}{one_line(e.strerror or e)}", file=sys.stderr)
        return 2 if isinstance(e, PermissionError) else 1  # a folder the user cannot write


def _after_interrupt(command: str | None, argv: list[str]) -> str:
    """What a user can do after Ctrl-C of ``command`` (run as ``argv``)."""
    if command in ("pipeline", "sweep"):  # finished runs are kept, the interrupted one resumes
        return "rerun the same command, with the same --out, to continue"
    if command in MODES and "resume" in field_types(MODES[command].load()[0]):
        folder = RunDir.last_opened  # None: stopped before its folder was made
        if folder is None or not (folder / "checkpoint.pt").is_file():
            return "nothing was saved yet; rerun the same command to start again"
        given_out = any(a == "--out" or a.startswith("--out=") for a in argv)
        extra = ([] if given_out else ["--out", str(folder)]) + (  # the folder reprlab chose
            [] if "--resume" in argv else ["--resume"]
        )
        return f"rerun the same command{' with ' + ' '.join(extra) if extra else ''} to continue"
    if command in MODES:
        return "nothing is kept of an unfinished run; rerun the same command to start again"
    return "nothing was written"

