"""Errors the pure-Python layer raises. Each is a :class:`cellarrow.CellarrowError`, so one
``except CellarrowError`` catches whatever the package refuses, and also the built-in type a
Python user expects for the mistake (``ValueError``, ``TypeError``, ``IndexError``,
``OSError``)."""

from ._native import CellarrowError


class SettingValueError(CellarrowError, ValueError):
    """A setting with a value out of its range (a zero batch size, a negative epoch)."""


class SettingTypeError(CellarrowError, TypeError):
    """An unknown keyword, or a setting of the wrong type."""


class CellIndexError(CellarrowError, IndexError):
    """A cell id out of the range of the corpus."""


class CorpusNotFoundError(CellarrowError, FileNotFoundError):
    """A path that does not exist, or a directory that is not a corpus."""


class NotACorpusError(CellarrowError, NotADirectoryError):
    """A file (an ``.h5ad`` one, say) where a corpus directory was expected."""
