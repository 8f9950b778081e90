"""The one door to the database: URL resolution, per-dialect engine settings, errors mapped to
one line, tunesvc's trial and study attributes (:mod:`attrs <tunesvc.storage._attrs>`), and the
SQL tunesvc runs on Optuna's tables."""

from __future__ import annotations

from tunesvc.storage import _attrs as attrs
from tunesvc.storage._database import (
    ARTIFACTS_ENV,
    CHECKPOINTS_DIR,
    DEFAULT_URL,
    STORAGE_ENV,
    StudyRef,
    UpgradeResult,
    artifacts_dir,
    normalize_url,
    open_storage,
    redact,
    resolve_url,
    storage_errors,
    study_folder,
    upgrade_storage,
)

__all__ = [
    "ARTIFACTS_ENV",
    "CHECKPOINTS_DIR",
    "DEFAULT_URL",
    "STORAGE_ENV",
    "StudyRef",
    "UpgradeResult",
    "artifacts_dir",
    "attrs",
    "normalize_url",
    "open_storage",
    "redact",
    "resolve_url",
    "storage_errors",
    "study_folder",
    "upgrade_storage",
]
