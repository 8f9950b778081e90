"""What people read: dashboard notes and figures, the static report, the dashboard server."""

from __future__ import annotations

from tunesvc.presentation._dashboard import DEFAULT_HOST, DEFAULT_PORT, Dashboard, make_dashboard
from tunesvc.presentation._figures import (
    curves_figure,
    curves_svg,
    diagnoses_figure,
    diagnosis_counts,
    lr_wd_figure,
)
from tunesvc.presentation._notes import (
    DashboardNotes,
    record_study_note,
    record_trial_notes,
    study_note,
    trial_note,
)
from tunesvc.presentation._report import render_report

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Dashboard",
    "DashboardNotes",
    "curves_figure",
    "curves_svg",
    "diagnoses_figure",
    "diagnosis_counts",
    "lr_wd_figure",
    "make_dashboard",
    "record_study_note",
    "record_trial_notes",
    "render_report",
    "study_note",
    "trial_note",
]
