"""``tunesvc study report``, ``tunesvc dashboard`` and ``tunesvc storage upgrade``: the
storage opened the tunesvc way (URL resolution, engine settings, one-line errors), then handed
to what renders or serves it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tunesvc._errors import StorageError, TunesvcError
from tunesvc.presentation import DEFAULT_HOST, DEFAULT_PORT, Dashboard, make_dashboard
from tunesvc.presentation import render_report as render
from tunesvc.service._studies import load_study, opened
from tunesvc.storage import artifacts_dir, open_storage, redact, storage_errors


@dataclass(frozen=True)
class ReportResult:
    study: str
    path: Path
    trials: int

    def to_json(self) -> dict[str, object]:
        return {"study": self.study, "path": str(self.path), "trials": self.trials}


def report_filename(name: str) -> str:
    """A file name for study ``name``'s report that stays inside its folder whatever the name
    holds: letters, digits, ``.``, ``_`` and ``-`` kept, anything else ``_``, no leading dot.

    >>> report_filename("../etc/x y")
    '_.._etc_x_y.html'
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe.startswith("."):
        safe = "_" + safe
    return f"{safe[:200]}.html"


def write_report(name: str, url: str, out_dir: Path | None = None) -> ReportResult:
    """Write study ``name``'s static HTML report into ``out_dir`` (default: the current
    folder) as :func:`report_filename` names it."""
    with opened(url) as storage:
        study = load_study(storage, name, url)
        text = render(study)
        count = len(study.get_trials(deepcopy=False))
    folder = out_dir or Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / report_filename(name)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise TunesvcError(f"--out {folder}: cannot write the report ({e.strerror})") from None
    return ReportResult(name, path, count)


def open_dashboard(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Dashboard:
    """optuna-dashboard on ``url`` and its artifact store, bound and ready to serve. The
    database is reached now, so an unreachable one fails with its URL (no password) and the
    reason before a server starts."""
    storage = open_storage(url)
    with storage_errors(url):
        storage.get_all_studies()
    folder = artifacts_dir(url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"artifact folder {folder}: cannot create it ({e.strerror})") from None
    return make_dashboard(storage, folder, shown_as=redact(url), host=host, port=port)
