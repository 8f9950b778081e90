"""``tunesvc study report``, ``tunesvc dashboard`` and ``study trials --csv``: the storage
opened the tunesvc way (URL resolution, engine settings, one-line errors), then handed to what
renders or serves it."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesvc._errors import StorageError, TunesvcError
from tunesvc.presentation import DEFAULT_HOST, DEFAULT_PORT, Dashboard, make_dashboard
from tunesvc.presentation import render_report as render
from tunesvc.service._results import TrialInfo
from tunesvc.service._studies import iter_trials, load_study, opened
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


def trials_csv(trials: Iterable[TrialInfo], params: Sequence[str] | None = None
               ) -> Iterator[str]:
    """``trials`` as CSV lines: number, state, outcome, value, epochs, the diagnosis label, then
    one column per param (``param_NAME``, empty where a trial has none), as sweep tools export
    them. ``params`` names the param columns (else the trials' params, which are then read
    into memory first).

    >>> print("".join(trials_csv([TrialInfo(0, "COMPLETE", 0.9, {"lr": 0.01})])), end="")
    number,state,outcome,value,epochs,diagnosis,param_lr
    0,COMPLETE,,0.9,0,,0.01
    """
    if params is None:
        trials = list(trials)
        params = sorted({name for t in trials for name in t.params})
    yield _csv_line(["number", "state", "outcome", "value", "epochs", "diagnosis",
                     *(f"param_{n}" for n in params)])
    for t in trials:
        yield _csv_line([t.number, t.state, t.outcome or "",
                         "" if t.value is None else t.value, t.epochs, t.label or "",
                         *(_cell(t.params.get(n)) for n in params)])


def study_trials_csv(name: str, url: str) -> Iterator[str]:
    """Study ``name``'s trials as CSV lines (:func:`trials_csv`), streamed in two passes over
    the study (the first finds the param names), so memory stays flat at any size."""
    names = sorted({n for t in iter_trials(name, url) for n in t.params})
    return trials_csv(iter_trials(name, url), names)


def trials_json(trials: Iterable[TrialInfo]) -> Iterator[str]:
    """``trials`` as one JSON array, a trial per chunk, so it streams at any size."""
    yield "["
    for i, t in enumerate(trials):
        yield ("" if i == 0 else ",") + "\n  " + json.dumps(t.to_json(), default=str)
    yield "\n]\n"


def _csv_line(cells: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def open_dashboard(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Dashboard:
    """optuna-dashboard on ``url`` and its artifact store, bound and ready to serve. The
    database is reached now, so an unreachable one fails with its URL (no password) and the
    reason before a server starts."""
    storage = open_storage(url, create=False)
    with storage_errors(url):
        storage.get_all_studies()
    folder = artifacts_dir(url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"artifact folder {folder}: cannot create it ({e.strerror})") from None
    return make_dashboard(storage, folder, shown_as=redact(url), host=host, port=port)
