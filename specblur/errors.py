"""Exceptions raised for bad user input."""


class SpecblurError(ValueError):
    """Bad input from the user: a setting, a file or an array.

    The command-line tools print its message alone, without a traceback, and exit with
    status 2. It subclasses ``ValueError`` so that API callers can catch either.
    """
