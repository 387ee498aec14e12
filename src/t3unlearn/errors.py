"""User-facing errors: one clear line saying what is wrong and how to fix it.

Every error a user can fix (bad input, missing or corrupt file, wrong combination of settings) is a
:class:`T3Error`, and every :class:`T3Error` is a :class:`ValueError`, so Python callers can catch
either. The command line prints the message without a traceback and exits 2.

Library messages speak of parameters, not of command-line flags: raise
``T3Error("must be >= 1, not 0.", option="seeds")`` and Python users read
``seeds must be >= 1, not 0.`` while the command line prints ``--seeds must be >= 1, not 0.``
(:meth:`T3Error.cli_message`).
"""

from __future__ import annotations

import errno


class T3Error(ValueError):
    """An error the user can fix; its message says what is wrong and how to fix it.

    ``option``: the parameter the message is about (its text then follows the parameter's name);
    the command line shows it as the flag ``--option-name``.
    """

    def __init__(self, message: str = "", *, option: str | None = None):
        self.option = option
        self.detail = message
        super().__init__(f"{option} {message}" if option else message)

    def cli_message(self) -> str:
        """The message with the parameter spelled as its command-line flag."""
        if self.option:
            return f"--{self.option.replace('_', '-')} {self.detail}"
        return str(self)


class DataError(T3Error):
    """A data set is missing, empty, malformed, or inconsistent with another."""


class ModelError(T3Error):
    """A model, head or checkpoint is missing, corrupt, or does not fit its base."""


class ConfigError(T3Error):
    """A settings file or a settings dict has an unknown key, a wrong type or a value out of range."""


_OS_FIXES = {
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "the disk is full; free some space (or point $T3UNLEARN_HOME / --out elsewhere) and rerun: "
                  "finished steps are kept",
    errno.EDQUOT: "the disk quota is exhausted; free some space and rerun: finished steps are kept",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a directory; check the path",
    errno.EISDIR: "it is a directory where a file is needed; check the path",
}


def user_error_message(exc: BaseException) -> str | None:
    """The one line a user sees for an error they can fix (a :class:`T3Error` in the CLI's words, or an OS
    error such as a full disk or a missing permission); None for anything else (a bug: let it raise)."""
    if isinstance(exc, T3Error):
        return exc.cli_message()
    if isinstance(exc, OSError):
        return os_error_message(exc)
    return None


def os_error_message(exc: OSError) -> str | None:
    """One line for an operating-system error a user can fix (permissions, disk full, a wrong path), or
    None for any other (a bug: the traceback is then shown)."""
    fix = _OS_FIXES.get(exc.errno)
    if fix is None:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or 'error'}:{where}; {fix}."


__all__ = ["T3Error", "DataError", "ModelError", "ConfigError", "os_error_message", "user_error_message"]
