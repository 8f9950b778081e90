"""The one door to the database: URL resolution, per-dialect engine settings, errors mapped to
one line, tunesvc's trial and study attributes (:mod:`attrs <tunesvc.storage._attrs>`), and the
SQL tunesvc runs on Optuna's tables: the lazy queue (:class:`StudyQueue`) and the reads that stay
fast at 100,000 trials (:class:`StudyReads`)."""

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
    checkpoint_path,
    normalize_url,
    open_storage,
    redact,
    require_sqlite_file,
    resolve_url,
    storage_errors,
    study_folder,
    upgrade_storage,
)
from tunesvc.storage._queue import (
    SCHEMA_REVISION,
    Claim,
    Lost,
    Orphan,
    QueueState,
    Requeued,
    StudyQueue,
    check_schema,
)
from tunesvc.storage._reads import (
    FinishedCursor,
    FinishedTrial,
    RunningRow,
    StudyReads,
    TrialRow,
    counts_by_state,
    heartbeat_ages,
)

__all__ = [
    "ARTIFACTS_ENV",
    "CHECKPOINTS_DIR",
    "DEFAULT_URL",
    "SCHEMA_REVISION",
    "STORAGE_ENV",
    "Claim",
    "FinishedCursor",
    "FinishedTrial",
    "Lost",
    "Orphan",
    "QueueState",
    "Requeued",
    "RunningRow",
    "StudyQueue",
    "StudyReads",
    "StudyRef",
    "TrialRow",
    "UpgradeResult",
    "artifacts_dir",
    "attrs",
    "check_schema",
    "checkpoint_path",
    "counts_by_state",
    "heartbeat_ages",
    "normalize_url",
    "open_storage",
    "redact",
    "require_sqlite_file",
    "resolve_url",
    "storage_errors",
    "study_folder",
    "upgrade_storage",
]
