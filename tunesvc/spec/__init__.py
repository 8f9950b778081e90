"""Pure: study specs, search spaces, grid cells and seeded draws, refine's range narrowing,
objective references. No database, no torch."""

from __future__ import annotations

from tunesvc.spec._objective import (
    DEFAULT_EPOCHS,
    Objective,
    ResolvedStudy,
    builtin_objectives,
    resolve_objective,
    resolve_study,
)
from tunesvc.spec._refine import refine_params
from tunesvc.spec._spec import (
    ChoiceParam,
    Direction,
    ParamSpec,
    ParamValue,
    RangeParam,
    StudySpec,
    grid_cells,
    grid_points,
    parse_fixed_params,
    parse_param_option,
    parse_spec,
    parse_spec_dict,
    read_spec_file,
    sample_random,
    spec_from_options,
)

__all__ = [
    "DEFAULT_EPOCHS",
    "ChoiceParam",
    "Direction",
    "Objective",
    "ParamSpec",
    "ParamValue",
    "RangeParam",
    "ResolvedStudy",
    "StudySpec",
    "builtin_objectives",
    "grid_cells",
    "grid_points",
    "parse_fixed_params",
    "parse_param_option",
    "parse_spec",
    "parse_spec_dict",
    "read_spec_file",
    "refine_params",
    "resolve_objective",
    "resolve_study",
    "sample_random",
    "spec_from_options",
]
