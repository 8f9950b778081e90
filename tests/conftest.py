"""Shared fixtures: real storages only, a temporary SQLite file and this machine's PostgreSQL.

Each PostgreSQL test gets a schema of its own in database ``test`` (through ``search_path`` in
the URL), dropped afterwards, so tests never see each other's studies.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from hypothesis import settings

# Property tests explore new examples on every run at a desk; CI replays a fixed set, so a
# landing never hangs on a new random draw (a draw that fails locally becomes a test).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

PG_ADMIN_URL = os.environ.get(
    "TUNESVC_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REPO = Path(__file__).resolve().parent.parent


def _pg_engine() -> sqlalchemy.engine.Engine:
    return sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models: one thread avoids oversubscribing cores shared with other test workers.
    A module that trains uses it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[sqlalchemy.engine.Engine]:
    engine = _pg_engine()
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sqlalchemy.exc.OperationalError as e:  # a missing service fails loudly, never skips
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {e.orig}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_engine: sqlalchemy.engine.Engine) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with pg_engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    with pg_engine.connect() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tunesvc.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage-touching test runs on a temporary SQLite file and on real PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Artifacts go to the test's own folder; no test reads the developer's TUNESVC_STORAGE.
    Dataset caches are shared across tests (building MNIST-1D once is the point of a cache)."""
    monkeypatch.delenv("TUNESVC_STORAGE", raising=False)
    monkeypatch.setenv("TUNESVC_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("TUNESVC_DATA_DIR", str(REPO / "storage" / "datasets"))
