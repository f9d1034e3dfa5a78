"""The one exception type users see: printed as a single line, exit code 2, no traceback."""


class ReprlabError(Exception):
    """A problem with the user's input (file, flag, config).

    The message names the file or flag and says what is wrong.

    The CLI prints ``reprlab: error: <message>`` on one line, exit code 2.
    """


class TrainingFailed(Exception):
    """Training cannot go on (e.g. the loss became NaN/Inf): the run is marked failed, exit 1."""
