"""The study spec: a TOML file parsed into typed dataclasses, validated before anything is written.

Example::

    spec = parse_spec('''
        objective = "digits_mlp"
        sampler = "grid"
        [params]
        lr = { low = 1e-4, high = 1e-1, log = true, points = 4 }
        hidden = { values = [64, 128] }
    ''')
    grid_points(spec.params["lr"])  # [0.0001, 0.001, 0.01, 0.1]
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Literal

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from tunesvc._errors import ObjectiveError, SpecError

SAMPLERS = ("grid", "random")
DIRECTIONS = ("maximize", "minimize")
PRUNERS = ("diagnostic", "median", "hyperband", "none")
DEVICE_FORMS = "'auto', 'cpu', 'cuda' or 'cuda:N'"

MAX_NAME_LENGTH = 128
"""The longest study name: every database Optuna supports stores names of 512 characters, and
the recipe appends ``-coarse``, ``-refine`` and ``-final`` to its prefix."""
NAME_RULE = (f"1 to {MAX_NAME_LENGTH} printable characters, no control characters, no leading "
             "or trailing spaces")

ParamValue = CategoricalChoiceType
Direction = Literal["maximize", "minimize"]


def check_study_name(name: str) -> str:
    """``name`` if it is a valid study name (see :data:`NAME_RULE`), else a :class:`SpecError`
    that states the rule. Names are data, never paths: tunesvc derives no file name from one.

    >>> check_study_name("coarse lr search")
    'coarse lr search'
    """
    if not isinstance(name, str) or not name:
        raise SpecError(f"study name: expected {NAME_RULE}; got an empty name")
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(f"study name: expected {NAME_RULE}; got {len(name)} characters "
                        f"({name[:20]!r}...)")
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        raise SpecError(f"study name: expected {NAME_RULE}; got {name!r}, which holds {bad!r}")
    if name.strip() != name:
        raise SpecError(f"study name: expected {NAME_RULE}; got {name!r}")
    return name


def check_device(device: object, where: str = "device") -> str:
    """``device`` if it has one of the forms a trial can train on (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``), else a :class:`SpecError` naming ``where``. Whether this machine has that
    device is asked where it runs (see :func:`tunesvc.service.run_study`).

    >>> check_device("cuda:1")
    'cuda:1'
    """
    if isinstance(device, str):
        kind, colon, index = device.partition(":")
        if device in ("auto", "cpu", "cuda") or (kind == "cuda" and colon and index.isdigit()
                                                  and index.isascii()):
            return device
    raise SpecError(f"{where}: expected {DEVICE_FORMS}, got {device!r}")


@dataclass(frozen=True)
class RangeParam:
    """A numeric range: ``low..high``, log-uniform when ``log``, integer when ``is_int``."""

    name: str
    low: float
    high: float
    log: bool = False
    is_int: bool = False
    step: float | None = None
    points: int | None = None

    def distribution(self) -> BaseDistribution:
        if self.is_int:
            step = 1 if self.step is None else int(self.step)
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=step)
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def to_dict(self) -> dict[str, Any]:
        low: float | int = int(self.low) if self.is_int else self.low
        high: float | int = int(self.high) if self.is_int else self.high
        out: dict[str, Any] = {"low": low, "high": high}
        if self.log:
            out["log"] = True
        out["type"] = "int" if self.is_int else "float"
        if self.step is not None:
            out["step"] = int(self.step) if self.is_int else self.step
        if self.points is not None:
            out["points"] = self.points
        return out


@dataclass(frozen=True)
class ChoiceParam:
    """An explicit list of values: categorical for random search, the grid's values for grid."""

    name: str
    values: tuple[ParamValue, ...]

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}


ParamSpec = RangeParam | ChoiceParam


@dataclass(frozen=True)
class StudySpec:
    """A whole study: what to train, what to search, how, and for how long."""

    objective: str
    direction: str | None = None
    sampler: str = "random"
    n_trials: int | None = None
    epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    params: dict[str, ParamSpec] = field(default_factory=dict)
    pruner: str = "diagnostic"
    pruner_settings: dict[str, Any] = field(default_factory=dict)
    population: int = 1
    """Trials a worker trains at once as one vectorized population (``study run
    --population`` overrides it); 1 trains one trial at a time."""

    def to_dict(self) -> dict[str, Any]:
        """The spec as a TOML-shaped dict; ``parse_spec_dict(spec.to_dict()) == spec``."""
        out: dict[str, Any] = {"objective": self.objective, "sampler": self.sampler}
        for key in ("direction", "n_trials", "epochs"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["seed"] = self.seed
        out["device"] = self.device
        out["pruner"] = self.pruner
        if self.population != 1:
            out["population"] = self.population
        if self.pruner_settings:
            out["pruner_settings"] = dict(self.pruner_settings)
        out["params"] = {name: p.to_dict() for name, p in self.params.items()}
        return out

    def with_params(self, params: Mapping[str, ParamSpec]) -> StudySpec:
        return replace(self, params=dict(params))


_TOP_KEYS = {
    "objective", "direction", "sampler", "n_trials", "epochs", "seed", "device", "params",
    "pruner", "pruner_settings", "population",
}
_PARAM_KEYS = {"low", "high", "log", "points", "step", "type", "values"}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)


def _positive_int(data: Mapping[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise SpecError(f"{where}{key}: expected an integer >= 1, got {key} = {value!r}")
    return int(value)


def parse_param(name: str, raw: Any) -> ParamSpec:
    """One entry of ``[params]``: ``{low, high, log?, points?, step?, type?}`` or ``{values}``.

    A bare list is shorthand for ``{values = [...]}`` and a bare scalar fixes the param.
    """
    where = f"params.{name}"
    if isinstance(raw, list):
        raw = {"values": raw}
    elif _is_number(raw) or isinstance(raw, str | bool):
        raw = {"values": [raw]}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: expected a table like {{ low = 0.1, high = 1.0 }} or "
                        f"{{ values = [...] }}, got {raw!r}")
    unknown = sorted(set(raw) - _PARAM_KEYS)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; allowed: "
                        f"{', '.join(sorted(_PARAM_KEYS))}")
    if "values" in raw:
        extra = sorted(set(raw) - {"values"})
        if extra:
            raise SpecError(f"{where}: 'values' cannot be combined with {extra[0]!r}")
        values = raw["values"]
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}.values: expected a non-empty list, got {values!r}")
        for v in values:
            if not (v is None or _is_number(v) or isinstance(v, str | bool)):
                raise SpecError(f"{where}.values: expected numbers, strings or booleans, "
                                f"got {v!r}")
        if len(set(map(repr, values))) != len(values):
            raise SpecError(f"{where}.values: values must be distinct, got {values!r}")
        return ChoiceParam(name, tuple(values))

    if "low" not in raw or "high" not in raw:
        missing = "low" if "low" not in raw else "high"
        raise SpecError(f"{where}: missing {missing!r}; give low and high, or values = [...]")
    low, high = raw["low"], raw["high"]
    for key, v in (("low", low), ("high", high)):
        if not _is_number(v):
            raise SpecError(f"{where}.{key}: expected a finite number, got {v!r}")
    kind = raw.get("type")
    if kind is None:
        kind = "int" if _is_int(low) and _is_int(high) else "float"
    if kind not in ("int", "float"):
        raise SpecError(f"{where}.type: expected 'int' or 'float', got {kind!r}")
    is_int = kind == "int"
    if is_int and not (float(low).is_integer() and float(high).is_integer()):
        raise SpecError(f"{where}: type = 'int' needs integer low and high, got "
                        f"low = {low!r}, high = {high!r}")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{where}.log: expected true or false, got {log!r}")
    if low >= high:
        raise SpecError(f"{where}: low must be below high, got low = {low!r}, high = {high!r}")
    if log and low <= 0:
        raise SpecError(f"{where}: log = true needs low > 0, got low = {low!r}")
    step = raw.get("step")
    if step is not None:
        if not _is_number(step) or step <= 0:
            raise SpecError(f"{where}.step: expected a number > 0, got {step!r}")
        if log:
            raise SpecError(f"{where}: step cannot be combined with log = true; drop one")
        if is_int and not float(step).is_integer():
            raise SpecError(f"{where}.step: an integer param needs an integer step, got {step!r}")
        if is_int and (int(high) - int(low)) % int(step):
            raise SpecError(f"{where}.step: step = {step} must divide high - low = "
                            f"{int(high) - int(low)}")
        if step > high - low:
            raise SpecError(f"{where}.step: step = {step} is larger than high - low")
    points = _positive_int(raw, "points", f"{where}.")
    return RangeParam(
        name=name,
        low=float(low),
        high=float(high),
        log=log,
        is_int=is_int,
        step=None if step is None else float(step),
        points=points,
    )


def parse_params(raw: Any) -> dict[str, ParamSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"params: expected a table of params, got {raw!r}")
    return {str(name): parse_param(str(name), value) for name, value in raw.items()}


def parse_spec_dict(data: Mapping[str, Any]) -> StudySpec:
    """Validate a TOML-shaped dict into a :class:`StudySpec` (raises :class:`SpecError`)."""
    unknown = sorted(set(data) - _TOP_KEYS - {"pruner"})
    if unknown:
        allowed = ", ".join(sorted(_TOP_KEYS))
        raise SpecError(f"unknown spec key {unknown[0]!r}; allowed: {allowed}")
    objective = data.get("objective")
    if not isinstance(objective, str) or not objective.strip():
        raise SpecError("objective: missing; name a built-in (digits_mlp), "
                        "'package.module:function' or 'path/file.py:function'")
    sampler = data.get("sampler", "random")
    if sampler not in SAMPLERS:
        raise SpecError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    direction = data.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise SpecError(f"direction: expected maximize or minimize, got {direction!r}")
    seed = data.get("seed", 0)
    if not _is_int(seed):
        raise SpecError(f"seed: expected an integer, got {seed!r}")
    device = check_device(data.get("device", "auto"))
    # `pruner` is a name, or a TOML table with `name` plus settings ([pruner] in a spec file).
    pruner_raw = data.get("pruner", "diagnostic")
    settings: dict[str, Any] = dict(data.get("pruner_settings") or {})
    if isinstance(pruner_raw, Mapping):
        settings = {k: v for k, v in pruner_raw.items() if k != "name"}
        pruner_raw = pruner_raw.get("name", "diagnostic")
    if pruner_raw not in PRUNERS:
        raise SpecError(f"pruner: expected one of {', '.join(PRUNERS)}, got {pruner_raw!r}")
    return StudySpec(
        objective=objective.strip(),
        direction=direction,
        sampler=sampler,
        n_trials=_positive_int(data, "n_trials", ""),
        epochs=_positive_int(data, "epochs", ""),
        seed=int(seed),
        device=device,
        params=parse_params(data.get("params")),
        pruner=str(pruner_raw),
        pruner_settings=settings,
        population=_positive_int(data, "population", "") or 1,
    )


def parse_spec(text: str) -> StudySpec:
    """Parse a spec from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec is not valid TOML: {e}") from None
    return parse_spec_dict(data)


def parse_param_option(option: str) -> tuple[str, ParamSpec]:
    """``--param`` on the command line: ``NAME=VALUE`` where VALUE is a TOML value.

    ``lr={low=1e-4, high=1e-1, log=true}``, ``hidden=[64, 128]``, ``dropout=0.1`` (fixed), or the
    shorthand ``lr=1e-4..1e-1,log,points=4`` (``int`` and ``step=S`` are accepted there too).
    """
    name, sep, value = option.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise SpecError(f"--param {option!r}: expected NAME=VALUE, e.g. lr=1e-4..1e-1,log")
    value = value.strip()
    head = value.split(",")[0]
    if ".." in head and not value.startswith(("{", "[")):
        return name, _parse_shorthand(name, value)
    return name, parse_param(name, _toml_value(name, value))


def _toml_value(name: str, text: str) -> Any:
    """``--param NAME=TEXT``'s value: a TOML value, else (a bare word) the text itself. A list
    or a table that is not valid TOML is an error, never a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as e:
        if text.startswith(("[", "{")):
            kind = "list" if text.startswith("[") else "table"
            reason = str(e).split(" (at ")[0]
            example = (f'{name}=[64, 128] or {name}=["adamw", "sgd"] (strings quoted)'
                       if kind == "list" else f"{name}={{ low = 1e-4, high = 1e-1 }}")
            raise SpecError(f"--param {name}={text}: not a valid TOML {kind} ({reason}); "
                            f"e.g. {example}") from None
        return text  # a bare word is a single categorical value


def _parse_shorthand(name: str, value: str) -> ParamSpec:
    low_s, _, rest = value.partition("..")
    high_s, *flags = rest.split(",")
    table: dict[str, Any] = {}
    try:
        for key, text in (("low", low_s), ("high", high_s)):
            number = tomllib.loads(f"v = {text.strip()}")["v"]
            table[key] = number
        for flag in (f.strip() for f in flags):
            if flag == "log":
                table["log"] = True
            elif flag == "int":
                table["type"] = "int"
            elif flag.startswith(("points=", "step=")):
                key, _, text = flag.partition("=")
                table[key] = tomllib.loads(f"v = {text}")["v"]
            else:
                raise SpecError(f"--param {name}: unknown flag {flag!r}; use log, int, "
                                "points=N or step=S")
    except tomllib.TOMLDecodeError:
        raise SpecError(f"--param {name}={value}: expected LOW..HIGH[,log][,int][,points=N]"
                        "[,step=S] with numbers") from None
    return parse_param(name, table)


def grid_points(param: ParamSpec) -> list[ParamValue]:
    """The finite values a grid visits for ``param`` (raises :class:`SpecError` if it has none).

    ``log`` spaces points geometrically, otherwise evenly; integers are rounded and de-duplicated;
    ``step`` snaps points onto ``low + k * step``.
    """
    if isinstance(param, ChoiceParam):
        return list(param.values)
    if param.points is None:
        raise SpecError(f"params.{param.name}: a grid needs finite points; add points = N "
                        "or values = [...]")
    if param.points == 1:
        raw = np.array([param.low])
    elif param.log:
        raw = np.geomspace(param.low, param.high, param.points)
    else:
        raw = np.linspace(param.low, param.high, param.points)
    if param.step is not None:
        raw = param.low + np.round((raw - param.low) / param.step) * param.step
        raw = np.clip(raw, param.low, param.high)
    out: list[ParamValue] = []
    for x in raw.tolist():
        v: ParamValue = int(round(x)) if param.is_int else float(x)
        if v not in out:
            out.append(v)
    return out


def grid_cells(params: Mapping[str, ParamSpec]) -> list[dict[str, ParamValue]]:
    """Every combination of the params' grid points, in a fixed order (the first param slowest)."""
    names = list(params)
    axes = [grid_points(params[n]) for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in product(*axes)]


def sample_random(
    params: Mapping[str, ParamSpec], n: int, seed: int
) -> list[dict[str, ParamValue]]:
    """``n`` seeded random draws: log-uniform where ``log``, uniform otherwise.

    The draws depend only on ``params``, ``n`` and ``seed``, never on how many workers run them.
    """
    rng = np.random.default_rng(seed)
    draws: list[dict[str, ParamValue]] = []
    for _ in range(n):
        draw: dict[str, ParamValue] = {}
        for name in params:
            draw[name] = _draw(params[name], rng)
        draws.append(draw)
    return draws


def _draw(param: ParamSpec, rng: np.random.Generator) -> ParamValue:
    if isinstance(param, ChoiceParam):
        return param.values[int(rng.integers(len(param.values)))]
    low, high = param.low, param.high
    if param.is_int:
        if param.log:
            x = math.exp(rng.uniform(math.log(low - 0.5), math.log(high + 0.5)))
            return int(min(max(round(x), low), high))
        step = int(param.step or 1)
        return int(low) + step * int(rng.integers((int(high) - int(low)) // step + 1))
    if param.log:
        return float(min(max(math.exp(rng.uniform(math.log(low), math.log(high))), low), high))
    if param.step is not None:
        k = int(rng.integers(int(math.floor((high - low) / param.step + 1e-9)) + 1))
        return float(min(low + k * param.step, high))
    return float(rng.uniform(low, high))


def spec_from_options(
    base: Mapping[str, Any] | None = None,
    *,
    objective: str | None = None,
    sampler: str | None = None,
    n_trials: int | None = None,
    epochs: int | None = None,
    direction: str | None = None,
    pruner: str | None = None,
    params: Sequence[str] = (),
) -> StudySpec:
    """A spec from a spec file's table (``base``, e.g. ``tomllib`` output) and command-line
    options, which override it; ``params`` are ``--param`` options (see
    :func:`parse_param_option`). Raises :class:`SpecError` for a bad value or when neither a
    spec nor an objective is given.

    >>> spec_from_options(objective="digits_mlp", n_trials=4).n_trials
    4
    """
    if base is not None and objective is not None:
        raise SpecError("give either --spec FILE or --objective, not both")
    if base is None and objective is None:
        raise SpecError("give --spec FILE or --objective NAME (e.g. --objective digits_mlp)")
    data: dict[str, Any] = dict(parse_spec_dict(base).to_dict()) if base is not None else {
        "objective": objective}
    overrides = {"sampler": sampler, "n_trials": n_trials, "epochs": epochs,
                 "direction": direction, "pruner": pruner}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if params:
        table = dict(data.get("params") or {})
        for option in params:
            name, param = parse_param_option(option)
            table[name] = param.to_dict()
        data["params"] = table
    return parse_spec_dict(data)


def read_spec_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML table of a spec file (raises :class:`SpecError` naming the file)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SpecError(f"--spec {path}: cannot read it ({e.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec is not valid TOML: {e}") from None


def distribution_contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one ``distribution`` can take: one of a categorical's choices, or a
    number in a range's bounds (an integer for an int range; on the ``step`` grid if any)."""
    if isinstance(distribution, CategoricalDistribution):
        return any(value == c and isinstance(value, bool) == isinstance(c, bool)
                   and isinstance(value, str) == isinstance(c, str) for c in distribution.choices)
    if isinstance(value, bool) or not _is_number(value):
        return False
    number = float(value)
    if isinstance(distribution, IntDistribution):
        if not number.is_integer():
            return False
        i, low, step = int(number), distribution.low, distribution.step
        return bool(low <= i <= distribution.high and (i - low) % step == 0)
    if isinstance(distribution, FloatDistribution):
        if not distribution.low <= number <= distribution.high:
            return False
        if distribution.step is None:
            return True
        k = (number - distribution.low) / distribution.step
        return abs(k - round(k)) <= 1e-8 * max(1.0, abs(k))
    return False


def describe_distribution(distribution: BaseDistribution) -> str:
    """``float 1e-05..1.0, log``, ``int 1..9``, ``values [64, 128]``."""
    if isinstance(distribution, CategoricalDistribution):
        return f"values {list(distribution.choices)}"
    if isinstance(distribution, FloatDistribution | IntDistribution):
        kind = "int" if isinstance(distribution, IntDistribution) else "float"
        extra = ", log" if distribution.log else ""
        return f"{kind} {distribution.low}..{distribution.high}{extra}"
    return repr(distribution)


def check_agreement(name: str, declared: ParamSpec, suggested: BaseDistribution) -> None:
    """Raise :class:`ObjectiveError` unless the spec's declaration of param ``name`` lies inside
    what a plain objective suggests for it (same type and log, the range or values inside)."""
    ok: bool
    if isinstance(declared, ChoiceParam):
        ok = all(distribution_contains(suggested, v) for v in declared.values)
    else:
        mine = declared.distribution()
        ok = (
            type(mine) is type(suggested)
            and isinstance(suggested, FloatDistribution | IntDistribution)
            and isinstance(mine, FloatDistribution | IntDistribution)
            and mine.log == suggested.log
            and suggested.low <= mine.low
            and mine.high <= suggested.high
        )
    if not ok:
        raise ObjectiveError(
            f"param {name!r}: the spec declares {describe_distribution(declared.distribution())}"
            f" but the objective suggests {describe_distribution(suggested)}; make the spec's "
            "range lie inside the objective's (same type and log)"
        )


def parse_fixed_params(options: list[str]) -> dict[str, Any]:
    """``--param NAME=VALUE`` options as fixed values: ``lr=0.01``, ``hidden=64``, ``sgd``.

    >>> parse_fixed_params(["lr=1e-2", "optimizer=sgd"])
    {'lr': 0.01, 'optimizer': 'sgd'}
    """
    out: dict[str, Any] = {}
    for option in options:
        name, sep, text = option.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise SpecError(f"--param {option!r}: expected NAME=VALUE with one value, "
                            "e.g. lr=0.01")
        value = _toml_value(name, text)  # a bare word: a string such as an optimizer name
        if isinstance(value, list | dict) or ".." in text.split(",")[0]:
            example = value[0] if isinstance(value, list) and value else "VALUE"
            raise SpecError(f"--param {name}={text}: expected one value here, e.g. "
                            f"{name}={example} (ranges and lists are searched by `tunesvc "
                            "study create`)")
        out[name] = value
    return out
