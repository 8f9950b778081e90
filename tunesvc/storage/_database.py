"""Where studies live: URL resolution, per-dialect engine settings, database errors mapped.

The URL comes from the ``--storage`` flag, else ``TUNESVC_STORAGE``, else
``sqlite:///storage/tunesvc.db`` relative to the working directory. Every message that shows a
URL shows it through :func:`redact`, so a password never reaches the terminal.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from tunesvc._errors import StorageError
from tunesvc.storage._attrs import UID

DEFAULT_URL = "sqlite:///storage/tunesvc.db"
STORAGE_ENV = "TUNESVC_STORAGE"
ARTIFACTS_ENV = "TUNESVC_ARTIFACTS"

# Drivers installed with tunesvc; a bare dialect name gets these instead of SQLAlchemy's default.
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_S = 60
POOL_SIZE = 4  # per worker process: main thread, heartbeat, report writer, rank refresher
POOL_OVERFLOW = 2
POOL_RECYCLE_S = 300


def resolve_url(flag: str | None = None) -> str:
    """The storage URL: the flag, else ``$TUNESVC_STORAGE``, else the default SQLite file."""
    url = flag or os.environ.get(STORAGE_ENV) or DEFAULT_URL
    return normalize_url(url)


def normalize_url(url: str) -> str:
    """Check the URL's form and pick the driver tunesvc installs for a bare dialect name."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"malformed storage URL {_scrub(url)!r}: expected e.g. sqlite:///storage/tunesvc.db "
            "or postgresql://user@host:5432/dbname"
        ) from None
    if parsed.drivername in _DRIVERS:
        parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(f"unsupported storage {redact(url)!r}: use sqlite, postgresql or mysql")
    if parsed.get_backend_name() == "sqlite" and not parsed.database:
        raise StorageError("storage URL sqlite:// names no file: use sqlite:///path/to/file.db")
    return parsed.render_as_string(hide_password=False)


def redact(url: str | URL) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        return _scrub(str(url))
    return parsed.render_as_string(hide_password=True)


def _scrub(text: str) -> str:
    # A malformed URL may still carry "user:password@"; drop what sits between ':' and '@'.
    head, at, tail = text.rpartition("@")
    if not at:
        return text
    scheme, sep, userinfo = head.partition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{tail}" if ":" in userinfo else text


def _place(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    return f"database {url.database!r} on {url.host or 'localhost'}:{url.port or 'default port'}"


def _engine_kwargs(url: URL) -> dict[str, Any]:
    """Per-dialect engine settings.

    One tunesvc worker is one process with its own engine: the main thread plus a heartbeat
    thread, so a small pool suffices and many machines x workers stay within the server's
    connection limit. A pooled connection is pinged before use and replaced after
    ``POOL_RECYCLE_S`` (servers and proxies drop idle ones); connecting gives up after
    ``CONNECT_TIMEOUT_S``; TCP keepalives notice a server that vanished mid-query.
    """
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    common: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_recycle": POOL_RECYCLE_S,
        "pool_size": POOL_SIZE,
        "max_overflow": POOL_OVERFLOW,
        "pool_timeout": CONNECT_TIMEOUT_S * 3,
    }
    if backend == "postgresql":
        common["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "application_name": "tunesvc",
        }
    else:
        common["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return common


def _serialize_sqlite_writers(engine: sqlalchemy.engine.Engine) -> None:
    """WAL plus BEGIN IMMEDIATE: several local workers on one SQLite file queue for the write
    lock instead of failing with "database is locked" when a read upgrades to a write."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let BEGIN below control transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn database errors raised inside the block into one-line :class:`StorageError`s."""
    try:
        yield
    except StorageError:
        raise
    except DBAPIError as e:
        raise StorageError(_explain(url, e)) from None
    except NoSuchModuleError:
        raise StorageError(f"no driver for storage {redact(url)!r}") from None


def _explain(url: str, e: DBAPIError) -> str:
    parsed = make_url(url)
    reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
    if parsed.password:
        reason = reason.replace(parsed.password, "***")
    return f"cannot use storage {redact(url)} ({_place(parsed)}): {reason}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (and create, if new) the Optuna database at ``url`` with tunesvc's engine settings.

    A database whose schema an older Optuna wrote is refused with one line that says to run
    ``tunesvc storage upgrade``; one a newer Optuna wrote, with one that says to upgrade here.
    """
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    with storage_errors(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=_engine_kwargs(parsed), skip_compatibility_check=True
        )
        if parsed.get_backend_name() == "sqlite":
            _serialize_sqlite_writers(storage.engine)
            storage.engine.dispose()  # connections opened during set-up lack the settings
        _check_schema(storage, url)
    return storage


def _check_schema(storage: optuna.storages.RDBStorage, url: str) -> None:
    current, head = storage.get_current_version(), storage.get_head_version()
    if current == head:
        return
    storage.engine.dispose()
    if current in storage.get_all_versions():
        raise StorageError(
            f"storage {redact(url)} was set up by an older Optuna (schema {current}, this "
            f"Optuna {optuna.__version__} needs {head}); run `tunesvc storage upgrade --storage "
            f"'{redact(url)}'` (back it up first)"
        )
    raise StorageError(
        f"storage {redact(url)} was set up by a newer Optuna (schema {current}) than this "
        f"machine's {optuna.__version__}; upgrade tunesvc and Optuna here"
    )


def artifacts_dir(url: str) -> Path:
    """Where checkpoints and figures go: ``$TUNESVC_ARTIFACTS``, else ``storage/artifacts``
    beside the default SQLite file (a path machines that share a filesystem can all reach)."""
    env = os.environ.get(ARTIFACTS_ENV)
    if env:
        return Path(env)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return Path(parsed.database).parent / "artifacts"
    return Path("storage") / "artifacts"


@dataclass(frozen=True)
class StudyRef:
    """A study as workers and their observers hold it: the Optuna study, the storage it lives
    in and its database id."""

    study: optuna.Study
    storage: optuna.storages.RDBStorage
    study_id: int


CHECKPOINTS_DIR = "checkpoints"
"""Under the artifacts folder: one folder per study, named by the study's ``uid``."""


def study_folder(artifacts: Path, study: optuna.Study, study_id: int) -> Path:
    """The study's own folder under ``artifacts``: named by the ``uid`` drawn when the study was
    created, never by its name (names are data, not paths). A study created before uids existed
    gets a folder named by a hash of its name and database id, not by the name itself."""
    uid = UID.get(study)
    if uid is None:
        digest = hashlib.sha256(f"{study.study_name}\0{study_id}".encode()).hexdigest()
        uid = f"legacy-{digest[:16]}"
    return artifacts / CHECKPOINTS_DIR / uid


@dataclass(frozen=True)
class UpgradeResult:
    """What ``tunesvc storage upgrade`` did: the schema revision before and after."""

    storage: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade_storage(url: str) -> UpgradeResult:
    """Upgrade the Optuna schema at ``url`` to this Optuna's head revision (Optuna's own
    migration, as ``optuna storage upgrade`` runs it). Back the database up first."""
    url = normalize_url(url)
    parsed = make_url(url)
    with storage_errors(url), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=_engine_kwargs(parsed), skip_compatibility_check=True,
            skip_table_creation=True,
        )
        try:
            try:
                before = storage.get_current_version()
            except AssertionError:
                raise StorageError(f"storage {redact(url)} holds no Optuna schema yet; nothing "
                                   "to upgrade (tunesvc creates it on first use)") from None
            head = storage.get_head_version()
            if before not in storage.get_all_versions():
                raise StorageError(
                    f"storage {redact(url)} has schema revision {before!r}, which this Optuna "
                    f"{optuna.__version__} does not know; upgrade tunesvc and Optuna here"
                )
            if before != head:
                storage.upgrade()
            return UpgradeResult(redact(url), before, storage.get_current_version())
        finally:
            storage.engine.dispose()
