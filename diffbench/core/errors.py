"""The one exception class for bad input.

An :class:`InputError` says the user's input is wrong (a value, a config, a file or a folder)
and names the value and what is allowed; the CLI prints it as one ``error:`` line and exits 2.
It is a ``ValueError``, so code that catches ``ValueError`` keeps working. Anything else (a
bug, a CUDA out-of-memory, a ``ValueError`` raised inside torch) is not the user's input: the
CLI lets it through with its traceback.
"""


class InputError(ValueError):
    """Bad input: the message names the value and what is allowed."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder the input names is not there (or lacks what it must hold)."""
