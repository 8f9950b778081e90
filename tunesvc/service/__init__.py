"""The service layer: what the CLI and Python users call.

Each function takes plain values, does its work against the storage and returns plain
dataclasses that the CLI prints as a table or as JSON.

Example::

    from tunesvc import service
    from tunesvc.spec import parse_spec

    service.create_study("demo", parse_spec('objective = "digits_mlp"'), url)
    summary = service.run_study("demo", url)
    summary.best.value
"""

from __future__ import annotations

from tunesvc.service._check import (
    build_setup,
    check_lr_free,
    check_setups,
    run_checks,
    with_checked_lr,
)
from tunesvc.service._outputs import (
    ReportResult,
    open_dashboard,
    report_filename,
    study_trials_csv,
    trials_csv,
    trials_json,
    write_report,
)
from tunesvc.service._recipe import (
    BUDGETS,
    Budget,
    RecipeResult,
    StageRow,
    default_prefix,
    describe_budget,
    parse_budget,
    run_recipe,
)
from tunesvc.service._refine import RefineResult, refine_study
from tunesvc.service._results import (
    RunningTrial,
    RunSummary,
    StudyDetail,
    StudySummary,
    TrialInfo,
    row_info,
)
from tunesvc.service._run import run_study
from tunesvc.service._studies import (
    best_trial,
    create_study,
    delete_study,
    iter_trials,
    list_studies,
    list_trials,
    resolve,
    show_study,
)
from tunesvc.storage import UpgradeResult, upgrade_storage

__all__ = [
    "BUDGETS",
    "Budget",
    "RecipeResult",
    "RefineResult",
    "ReportResult",
    "RunSummary",
    "RunningTrial",
    "StageRow",
    "StudyDetail",
    "StudySummary",
    "TrialInfo",
    "UpgradeResult",
    "best_trial",
    "build_setup",
    "check_lr_free",
    "check_setups",
    "create_study",
    "default_prefix",
    "delete_study",
    "describe_budget",
    "list_studies",
    "list_trials",
    "open_dashboard",
    "parse_budget",
    "iter_trials",
    "refine_study",
    "report_filename",
    "resolve",
    "run_checks",
    "run_recipe",
    "run_study",
    "show_study",
    "row_info",
    "study_trials_csv",
    "trials_csv",
    "trials_json",
    "upgrade_storage",
    "with_checked_lr",
    "write_report",
]
