"""Errors a user can meet. The CLI prints them as one line and exits non-zero; anything else is a bug."""


class TerwinError(Exception):
    """A user-facing problem: bad input, an impossible spec, a design that does not fit."""


class SpecError(TerwinError, ValueError):
    """A HardwareSpec field is invalid."""


class FormatError(TerwinError):
    """A model file is truncated, foreign, of another version, corrupt or inconsistent."""
