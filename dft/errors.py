"""The errors dft raises for a person to act on (bad input, a missing input, a failed stage).

The command line prints these as one line and exits non-zero (with ``-v`` also the traceback);
anything else is a bug and keeps its traceback. Each message names the field or path and the value,
and says what to do."""


class DftError(Exception):
    """An error whose message says what went wrong and what to do; no traceback needed."""


class InputError(DftError, ValueError):
    """A value a person gave (a config field, a vocabulary, a file's contents) that dft cannot use."""


class MissingInput(DftError, FileNotFoundError):
    """Something a stage reads is not there: an earlier stage has not run, or a path is wrong."""


class StageFailed(DftError):
    """A stage of a run raised a DftError; ``stage`` names it and ``__cause__`` is the error."""

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage {stage!r} failed: {cause}")
        self.stage = stage
