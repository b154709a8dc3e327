"""The base of every error dft raises for a person to act on (bad input, a failed stage).

The command line prints these as one red message and exits non-zero; anything else is a bug and
keeps its traceback."""


class DftError(Exception):
    """An error whose message says what went wrong and what to do; no traceback needed."""
