"""Storage edges (issue 14, items 9 and 10): a password is redacted whatever the URL's shape,
and a command that only reads never creates a SQLite file or a folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesvc import StorageError, service
from tunesvc.cli import app
from tunesvc.spec import parse_spec_dict
from tunesvc.storage import open_storage, redact

TUNESVC = str(Path(sys.executable).parent / "tunesvc")
PLAIN = "tests/objectives_fixtures/plain.py:quadratic"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:s3cret@Passw0rd@127.0.0.1:5434/tunesvc",
         "postgresql://bob:***@127.0.0.1:5434/tunesvc"),
        ("postgresql://me:hunter2@127.0.0.1:1/db", "postgresql://me:***@127.0.0.1:1/db"),
        ("postgresql://bob:a%40b@db.example/t", "postgresql://bob:***@db.example/t"),
        ("mysql://root:p:w:d@host/db", "mysql://root:***@host/db"),
        ("postgresql://:only@host/db", "postgresql://:***@host/db"),
        ("postgresql://u@h/db?password=abc&sslmode=require",
         "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///storage/tunesvc.db", "sqlite:///storage/tunesvc.db"),
        ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db"),
        ("not a url at all: x:y@z", "not a url at all: x:y@z"),
    ],
)
def test_redact_hides_every_shape_of_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_password_holding_at_is_never_printed() -> None:
    """The issue's URL: an unescaped '@' in the password; the driver's own error names the
    'host' it was handed, which holds the password's second half."""
    url = "postgresql://bob:s3cret@Passw0rd@127.0.0.1:5434/tunesvc"
    for args in (["study", "list"], ["study", "run", "x", "--workers", "2"],
                 ["study", "create", "x", "--objective", PLAIN, "--n-trials", "1"]):
        done = subprocess.run([TUNESVC, *args, "--storage", url], text=True,
                              capture_output=True, timeout=120)
        assert done.returncode == 3, done.stderr
        text = done.stdout + done.stderr
        assert "s3cret" not in text and "Passw0rd" not in text
        assert "bob:***@127.0.0.1:5434" in done.stderr and "%40" in done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


READERS = [
    ["study", "list"],
    ["study", "show", "x"],
    ["study", "best", "x"],
    ["study", "trials", "x"],
    ["study", "trials", "x", "--csv"],
    ["study", "run", "x"],
    ["study", "delete", "x", "--yes"],
    ["study", "refine", "x", "--into", "y"],
    ["study", "report", "x"],
    ["dashboard", "--port", "0"],
    ["storage", "upgrade"],
]


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_reading_a_missing_sqlite_file_is_an_error_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///typo/stroage.db"
    result = CliRunner().invoke(app, [*args, "--storage", url])
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("error: no SQLite file typo/stroage.db")
    assert result.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == []  # no file, no folder, no artifacts


def test_a_missing_postgresql_database_is_an_error(pg_url: str) -> None:
    url = pg_url.replace("/test?", "/no_such_database_here?")
    with pytest.raises(StorageError, match="no_such_database_here"):
        service.list_studies(url)


def test_creating_a_study_creates_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'tunesvc.db'}"
    with pytest.raises(StorageError, match="no SQLite file"):
        open_storage(url, create=False)
    assert not (tmp_path / "new").exists()
    spec = parse_spec_dict({"objective": PLAIN, "n_trials": 1})
    service.create_study("x", spec, url)
    assert (tmp_path / "new" / "tunesvc.db").is_file()
    assert [s.name for s in service.list_studies(url)] == ["x"]
