"""Every error tunesvc raises on purpose, rooted at :class:`TunesvcError`.

The CLI turns any of these into one red line and exits with ``exit_code``; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class TunesvcError(Exception):
    """Base of tunesvc's errors: the message says what was expected, what arrived, how to fix."""

    exit_code = 1


class SpecError(TunesvcError):
    """A study spec (TOML file, flags or pruner settings) is invalid."""

    exit_code = 2


class ObjectiveError(TunesvcError):
    """An objective reference cannot be resolved, imported or disagrees with the spec."""

    exit_code = 2


class StorageError(TunesvcError):
    """The storage URL is malformed or the database cannot be reached or used."""

    exit_code = 3


class StudyExistsError(TunesvcError):
    """A study of that name already exists in the storage."""

    exit_code = 4


class StudyNotFoundError(TunesvcError):
    """No study of that name exists in the storage."""

    exit_code = 4


class TrainingError(TunesvcError):
    """Training cannot run as set up: wrong shapes, unknown optimizer, missing device."""


class StudyBusyError(TunesvcError):
    """The study's trials are running on workers that still beat (``study delete``)."""

    exit_code = 4
