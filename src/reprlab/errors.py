"""The two exceptions users see, each printed as one line without a traceback: bad input
(:class:`ReprlabError`, exit code 2) and training that cannot go on (:class:`TrainingFailed`,
exit code 1)."""

import re


class ReprlabError(Exception):
    """A problem with the user's input (file, flag, config).

    The message names the file or flag and says what is wrong.

    The CLI prints ``reprlab: error: <message>`` on one line, exit code 2.
    """


class TrainingFailed(Exception):
    """Training cannot go on (e.g. the loss became NaN/Inf): the run is marked failed, exit 1.

    ``iteration``: the iterations run when it failed, where the training loop knows it.
    """

    def __init__(self, message: str, iteration: int | None = None) -> None:
        super().__init__(message)
        self.iteration = iteration


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a container or job scheduler) stops a command as Ctrl-C does; the CLI
    then exits with 143 (128 + SIGTERM), as a shell reports a process that SIGTERM ended."""


def first_line(e: BaseException) -> str:
    """The first line of a library's exception message for a one-line error, without a dangling
    colon or memory address (its type's name if it has no message)."""
    text = str(e).strip().splitlines()
    first = re.sub(r" at 0x[0-9a-f]+", "", text[0] if text else "").strip().rstrip(":").strip()
    return (first or type(e).__name__)[:200]


def one_line(e: object, limit: int | None = None) -> str:
    """The whole message on a single line (library messages, e.g. torch's state-dict errors,
    span several), cut to ``limit`` characters if given."""
    text = " ".join(str(e).split())
    return text if limit is None else text[:limit]
