"""The one exception type for errors a user can cause (bad config, bad file, impossible shape).

The CLI prints its message without a traceback and exits with status 2, so every message names
the field, file or row at fault and says what would fix it.
"""


class MoelabError(Exception):
    """A user-facing error: the message names what is wrong and how to fix it."""


class ConfigError(MoelabError):
    """An invalid configuration field."""


class TrainingDiverged(MoelabError):
    """The loss stopped being finite; the run cannot continue meaningfully."""


class RunStopped(Exception):
    """Training stopped on request (SIGTERM, --stop-after) after writing a mid-run checkpoint;
    rerunning the same command resumes it. Not a MoelabError: nothing is wrong with the run."""
