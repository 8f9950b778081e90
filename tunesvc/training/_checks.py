"""The recipe's first three steps, run before any study: is this objective worth tuning?

1. **Initial loss**: with weight decay off and before any update, a classifier that knows nothing
   should score ``log(num_classes)``; far from it, the loss or the initialization is wrong.
2. **Overfit a few minibatches**: with regularization off (no weight decay, no dropout), the model
   must reach 100% training accuracy on 5 to 10 minibatches; if it cannot, no tuning will help.
3. **LR range test**: the learning rate grows exponentially over ~100 iterations; the LR at which
   the loss falls fastest, and a log-uniform range around it for a coarse study.

Each check returns a :class:`CheckResult` with a verdict (``pass``, ``fail``, ``skipped``) and the
numbers it looked at. The checks read only a :class:`~tunesvc.training._fit.TrainingSetup`, so any
structured objective can be checked; a plain ``objective(trial)`` cannot, and says so.

Example::

    report = run_checks("digits_mlp")
    report.ok, report.suggested_lr  # True, RangeParam(name="lr", low=..., high=..., log=True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tunesvc._errors import TrainingError
from tunesvc.spec._spec import RangeParam
from tunesvc.training._fit import (
    TrainingSetup,
    classifies,
    loss_function,
    make_optimizer,
    resolve_device,
)

Verdict = Literal["pass", "fail", "skipped"]
Numbers = dict[str, float | int | str | None]

INITIAL_LOSS_TOLERANCE = 0.25
"""The initial loss passes within ``log(num_classes) * (1 ± tolerance)``."""
OVERFIT_BATCHES = 5
OVERFIT_MAX_STEPS = 1000
OVERFIT_STALL_EVALS = 15
"""Evaluations (every 20 steps) without a 2% fall in loss after which the overfit check stops."""
OVERFIT_REGRESSION_RATIO = 0.01
"""Without accuracies, overfitting passes when the loss falls below this fraction of its start."""
LR_TEST_ITERATIONS = 100
LR_TEST_MIN = 1e-6
LR_TEST_MAX = 10.0
LR_TEST_SMOOTHING = 0.8


@dataclass(frozen=True)
class CheckResult:
    """One check: its ``name``, ``verdict``, one-line ``summary``, the ``numbers`` behind it and,
    when it failed or was skipped, what to try (``advice``)."""

    name: str
    verdict: Verdict
    summary: str
    numbers: Numbers = field(default_factory=dict)
    advice: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["numbers"] = {k: _json_number(v) for k, v in self.numbers.items()}
        return out


@dataclass(frozen=True)
class CheckReport:
    """All checks of one objective with one set of params."""

    objective: str
    params: dict[str, Any]
    checks: list[CheckResult]
    suggested_lr: RangeParam | None

    @property
    def ok(self) -> bool:
        return all(c.verdict != "fail" for c in self.checks)

    @property
    def first_failure(self) -> CheckResult | None:
        return next((c for c in self.checks if c.verdict == "fail"), None)

    @property
    def skipped(self) -> list[str]:
        return [c.name for c in self.checks if c.verdict == "skipped"]

    def to_json(self) -> dict[str, Any]:
        lr = self.suggested_lr
        return {
            "objective": self.objective,
            "params": self.params,
            "ok": self.ok,
            "skipped": self.skipped,
            "checks": [c.to_json() for c in self.checks],
            "suggested_lr": None if lr is None else {"low": lr.low, "high": lr.high, "log": True},
        }


def _json_number(x: float | int | str | None) -> float | int | str | None:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --- the checks over a TrainingSetup ---------------------------------------------------------


@dataclass
class _Prepared:
    """What the checks share: a fresh-model factory, the loss, a slice of train data."""

    make_model: Callable[[], nn.Module]
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    x: Tensor
    y: Tensor
    classifies: bool
    num_classes: int | None
    device: torch.device
    seed: int


def _train_tensors(data: Any, limit: int) -> tuple[Tensor, Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        return x[:limit], y[:limit]
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=limit, shuffle=False)
        xb, yb = next(iter(loader))
        return xb, yb
    raise TrainingError(f"train must be (X, y) tensors or a Dataset, got {type(data).__name__}")


def _prepare(setup: TrainingSetup, seed: int, device: str, limit: int) -> _Prepared:
    dev = resolve_device(device)

    def make_model() -> nn.Module:
        torch.manual_seed(seed)
        model = setup.model if isinstance(setup.model, nn.Module) else setup.model()
        return model.to(dev)

    x, y = _train_tensors(setup.train, limit)
    if not y.is_floating_point():
        y = y.long()
    x, y = x.to(dev), y.to(dev)
    loss: Any = setup.loss
    loss_fn = loss_function(loss)
    with torch.no_grad():
        model = make_model().eval()
        out = model(x[: min(len(x), 64)])
    is_classifier = classifies(loss, out, y[: min(len(y), 64)])
    num_classes = int(out.shape[1]) if is_classifier else None
    return _Prepared(make_model, loss_fn, x, y, is_classifier, num_classes, dev, seed)


def _no_dropout(model: nn.Module) -> int:
    """Set every dropout layer's rate to 0; how many there were."""
    count = 0
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
            count += 1
    return count


def _accuracy(out: Tensor, y: Tensor) -> float:
    return float((out.argmax(dim=1) == y).float().mean())


def check_initial_loss(p: _Prepared, setup: TrainingSetup) -> CheckResult:
    """Check 1: the loss before any update, weight decay off, against ``log(num_classes)``."""
    name = "initial_loss"
    if not p.classifies or p.num_classes is None or p.num_classes < 2:
        return CheckResult(name, "skipped", "skipped: the loss is not a classification loss "
                           "over class scores, so there is no log(num_classes) to compare with",
                           {"loss": setup.loss if isinstance(setup.loss, str) else "callable"})
    model = p.make_model().eval()
    with torch.no_grad():
        loss = float(p.loss_fn(model(p.x), p.y))
    expected = math.log(p.num_classes)
    ratio = loss / expected
    numbers: Numbers = {"initial_loss": round(loss, 4), "expected": round(expected, 4),
                        "ratio": round(ratio, 3), "num_classes": p.num_classes,
                        "samples": len(p.x), "weight_decay": 0.0}
    if math.isfinite(loss) and abs(ratio - 1) <= INITIAL_LOSS_TOLERANCE:
        return CheckResult(name, "pass", f"initial loss {loss:.3f} is close to "
                           f"log({p.num_classes}) = {expected:.3f}", numbers)
    return CheckResult(
        name, "fail",
        f"initial loss {loss:.3f} is {ratio:.2f}x log({p.num_classes}) = {expected:.3f}",
        numbers,
        "The untrained model is confidently wrong: scale down the last layer's initial "
        "weights (or zero its bias), and check the loss takes raw logits, not probabilities.",
    )


def check_overfit(
    p: _Prepared, setup: TrainingSetup, batches: int = OVERFIT_BATCHES,
    max_steps: int = OVERFIT_MAX_STEPS,
) -> CheckResult:
    """Check 2: overfit ``batches`` minibatches with no regularization; expect 100% accuracy
    (without accuracies: the loss below 1% of where it started)."""
    name = "overfit_batches"
    n = min(len(p.x), batches * setup.batch_size)
    x, y = p.x[:n], p.y[:n]
    model = p.make_model()
    dropouts = _no_dropout(model)
    model.train()
    opt = make_optimizer(setup, model, weight_decay=0.0)
    with torch.no_grad():
        start_loss = float(p.loss_fn(model(x), y))
    bs = setup.batch_size
    steps, loss, acc = 0, start_loss, 0.0
    history: list[float] = []
    for steps in range(1, max_steps + 1):
        i = (steps - 1) % max(1, math.ceil(n / bs))
        xb, yb = x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]
        opt.zero_grad(set_to_none=True)
        batch_loss = p.loss_fn(model(xb), yb)
        batch_loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if steps % 20 == 0 or steps == max_steps:
            with torch.no_grad():
                out = model(x)
                loss = float(p.loss_fn(out, y))
                acc = _accuracy(out, y) if p.classifies else math.nan
            if not math.isfinite(loss) or (acc >= 1.0 if p.classifies
                                           else loss <= OVERFIT_REGRESSION_RATIO * start_loss):
                break
            history.append(loss)
            # Stuck: the loss fell by under 2% over the last 300 steps; more steps will not do.
            if len(history) > OVERFIT_STALL_EVALS and (
                    history[-1] > 0.98 * history[-1 - OVERFIT_STALL_EVALS]):
                break
    numbers: Numbers = {"batches": math.ceil(n / bs), "samples": n, "steps": steps,
                        "lr": setup.lr, "start_loss": round(start_loss, 4),
                        "final_loss": round(loss, 6), "dropout_layers_off": dropouts,
                        "weight_decay": 0.0}
    if p.classifies:
        numbers["train_acc"] = round(acc, 4)
        ok = acc >= 1.0
        got = f"{acc:.1%} training accuracy"
    else:
        ok = math.isfinite(loss) and loss <= OVERFIT_REGRESSION_RATIO * start_loss
        got = f"loss {loss:.3g} from {start_loss:.3g}"
    if ok:
        return CheckResult(name, "pass", f"overfit {numbers['batches']} minibatches "
                           f"({n} samples): {got} after {steps} steps", numbers)
    lr_hint = ("the loss blew up: lower the LR" if not math.isfinite(loss)
               else f"try a higher or lower LR than {setup.lr:g}")
    return CheckResult(
        name, "fail",
        f"could not overfit {numbers['batches']} minibatches ({n} samples) without "
        f"regularization: {got} after {steps} steps",
        numbers,
        f"Before any tuning, make this pass: {lr_hint}; a deeper or wider model; another "
        "initialization (e.g. Kaiming for ReLU layers); and check inputs and labels line up.",
    )


def lr_range_test(
    p: _Prepared, setup: TrainingSetup, iterations: int = LR_TEST_ITERATIONS,
    lr_min: float = LR_TEST_MIN, lr_max: float = LR_TEST_MAX,
) -> tuple[CheckResult, RangeParam | None]:
    """Check 3: grow the LR exponentially from ``lr_min`` to ``lr_max`` over ``iterations``
    minibatches; the LR where the smoothed loss falls fastest, and a range for a coarse study."""
    name = "lr_range"
    model = p.make_model().train()
    opt = make_optimizer(setup, model, lr=lr_min)
    gen = torch.Generator().manual_seed(p.seed + 1)
    bs = min(setup.batch_size, len(p.x))
    lrs: list[float] = []
    raw: list[float] = []
    smooth: list[float] = []
    avg = 0.0
    for it in range(iterations):
        lr = lr_min * (lr_max / lr_min) ** (it / max(iterations - 1, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(p.x), (bs,), generator=gen).to(p.device)
        opt.zero_grad(set_to_none=True)
        loss = p.loss_fn(model(p.x[idx]), p.y[idx])
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        avg = LR_TEST_SMOOTHING * avg + (1 - LR_TEST_SMOOTHING) * value
        lrs.append(lr)
        raw.append(value)
        smooth.append(avg / (1 - LR_TEST_SMOOTHING ** (it + 1)))
        if it > 10 and smooth[-1] > 4 * min(smooth):
            break  # the loss is climbing away: larger LRs tell nothing more
    result = lr_suggestion(lrs, smooth)
    numbers: Numbers = {"iterations": len(lrs), "lr_min": lr_min, "lr_max": lrs[-1] if lrs
                        else lr_min, "start_loss": round(smooth[0], 4) if smooth else None,
                        "lowest_loss": round(min(smooth), 4) if smooth else None}
    if result is None:
        return CheckResult(
            name, "fail",
            f"the loss did not fall at any LR from {lr_min:g} to {numbers['lr_max']:.3g} "
            f"over {len(lrs)} iterations",
            numbers,
            "Check the data pipeline (inputs, labels, shuffling) and that the loss takes the "
            "model's raw output; then the initialization.",
        ), None
    steepest, at_lowest, low, high = result
    numbers.update({"steepest_lr": float(f"{steepest:.3g}"),
                    "lowest_loss_lr": float(f"{at_lowest:.3g}"),
                    "suggested_low": float(f"{low:.3g}"), "suggested_high": float(f"{high:.3g}")})
    suggested = RangeParam("lr", float(f"{low:.3g}"), float(f"{high:.3g}"), log=True)
    return CheckResult(
        name, "pass",
        f"loss falls fastest at lr {steepest:.3g}; suggested log-uniform range "
        f"{suggested.low:.3g}..{suggested.high:.3g}",
        numbers,
    ), suggested


def lr_suggestion(
    lrs: list[float], smoothed: list[float], skip: int = 10, window: int = 3
) -> tuple[float, float, float, float] | None:
    """From an LR range test's (LR, smoothed loss) pairs: the LR of steepest descent, the LR of
    the lowest loss, and a log-uniform range: a decade below the steepest LR up to the lowest-loss
    LR (between 3x and 10x the steepest). ``None`` when the loss never fell 5% below where it
    started.

    The first ``skip`` iterations only set the reference loss (their smoothed values are noisy);
    the slope is taken over ``window`` iterations either side, in log LR.

    >>> lrs = [10 ** (-6 + i * 0.07) for i in range(80)]
    >>> loss = [2.3 - 1 / (1 + math.exp(-4 * (math.log10(lr) + 2))) for lr in lrs]
    >>> [f"{x:.1g}" for x in lr_suggestion(lrs, loss)]
    ['0.01', '0.3', '0.001', '0.1']
    """
    n = len(lrs)
    if n != len(smoothed) or n < 2 * skip:
        return None
    loss = np.asarray(smoothed, dtype=float)
    log_lr = np.log10(np.asarray(lrs, dtype=float))
    start = float(np.mean(loss[: skip + 1]))
    lowest = skip + int(np.argmin(loss[skip:]))
    if not loss[lowest] < 0.95 * start:
        return None
    slopes = []
    for i in range(skip, lowest + 1):
        a, b = max(i - window, 0), min(i + window, n - 1)
        slopes.append((loss[b] - loss[a]) / (log_lr[b] - log_lr[a]))
    steepest = skip + int(np.argmin(slopes))
    steep_lr, low_lr = float(lrs[steepest]), float(lrs[lowest])
    low = steep_lr / 10
    high = min(max(low_lr, 3 * steep_lr), 10 * steep_lr)
    return steep_lr, low_lr, low, high


# --- entry points ----------------------------------------------------------------------------


def _after_failure(name: str) -> CheckResult:
    return CheckResult(name, "skipped", "skipped: an earlier check failed")


def check_setup(
    setup: TrainingSetup, *, seed: int = 0, device: str = "cpu", stop_at_failure: bool = False
) -> tuple[list[CheckResult], RangeParam | None]:
    """The three checks on ``setup``, and the LR range the third suggests (``None`` if it
    cannot). With ``stop_at_failure`` the checks after a failed one are skipped. The global
    torch RNG is left as it was."""
    limit = max(OVERFIT_BATCHES * setup.batch_size, 1024)
    suggested = None
    with torch.random.fork_rng(devices=[]):
        prepared = _prepare(setup, seed, device, limit)
        checks = [check_initial_loss(prepared, setup)]

        def stop() -> bool:
            return stop_at_failure and any(c.verdict == "fail" for c in checks)

        checks.append(_after_failure("overfit_batches") if stop() else
                      check_overfit(prepared, setup))
        if stop():
            checks.append(_after_failure("lr_range"))
        else:
            lr_check, suggested = lr_range_test(prepared, setup)
            checks.append(lr_check)
    return checks, suggested


def suggest_lr_range(setup: TrainingSetup) -> tuple[CheckResult, RangeParam | None]:
    """Only the LR range test on ``setup`` (seed 0, CPU): its result and suggested range."""
    with torch.random.fork_rng(devices=[]):
        prepared = _prepare(setup, 0, "cpu", 1024)
        return lr_range_test(prepared, setup)
