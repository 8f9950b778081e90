"""Population mode (``study run NAME --population K``): a worker trains up to K claimed trials
of a structured objective at once, as vectorized populations (:class:`tunesvc.training.
Population`), each member still a full trial of its own.

Every member is opened, suggests its params and builds its setup right after its claim
(:func:`~tunesvc.worker._runner.start_structured`, the same start as a trial run alone), so its
params are its own slot's; it reports every epoch, stores its curves, asks the pruner, beats
(one heartbeat for all live members), checkpoints at its slot's path (a retry resumes there,
alone or in a population) and ends through :func:`~tunesvc.worker._runner.end_trial`, as a
trial run alone does. A pruned member (TrialPruned from its ``on_epoch``) is PRUNED; an early
stop completes it at its best; a diverged one is PRUNED with outcome ``diverged``; a member
that another worker failed as lost leaves, and the others go on.

Refilling: when members leave, the worker claims new trials until K are live again. A new trial
joins the running population of its :func:`~tunesvc.training.population_key` when there is one,
else it starts a population of its own beside the others (each steps an epoch in turn; K bounds
the members of all of them). So a random search over one architecture keeps one population full
from the first claim to the last, and a grid over structural params (hidden sizes, batch sizes)
trains one population per structure at once instead of draining one before starting the next.

A setup that cannot be vectorized (:func:`~tunesvc.training.group_setups` gives the one-line
reason, noted once per reason through the worker's events) trains alone with ``fit``, to its
end, on the normal path of :func:`~tunesvc.worker._runner.run_trial`.

Ctrl-C or SIGTERM fails every live member as ``interrupted`` and queues it again; so does a
run stopped by a spec error. Any other crash leaves the members to the lost-trial mechanism.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

import optuna

from tunesvc._errors import TunesvcError
from tunesvc.storage import Claim
from tunesvc.worker._context import TrialContext
from tunesvc.worker._events import TrialResult, WorkerEvent
from tunesvc.worker._heartbeat import Heartbeat
from tunesvc.worker._runner import (
    Start,
    end_trial,
    error_ending,
    fit_ending,
    interrupt,
    lost_trial,
    open_trial,
    run_opened,
    start_structured,
    study_still_there,
)
from tunesvc.worker._trial import SpecTrial

if TYPE_CHECKING:
    from tunesvc.training import FitResult, Population, TrainingSetup

NextClaim = Callable[[bool], Claim | None]
"""``next_claim(wait)``: the next trial this worker may run, or ``None`` (none now, or with
``wait`` none left: the queue is empty and no other worker runs a trial that may be lost)."""


@dataclass
class _Member:
    trial: SpecTrial
    slot: int


def run_members(
    ctx: TrialContext,
    size: int,
    next_claim: NextClaim,
    on_result: Callable[[TrialResult], None],
) -> None:
    """Run trials ``size`` at a time as populations until ``next_claim`` has none left and no
    member is live (see the module docstring); each finished trial goes to ``on_result``."""
    populations: dict[Hashable, Population] = {}
    live: dict[int, _Member] = {}  # by trial id, in the order they joined
    noted: set[str] = set()
    with Heartbeat(ctx.storage, ctx.queue, [], interval_s=ctx.heartbeat_s,
                   health=ctx.health, max_retries=ctx.max_retries) as beat, \
            study_still_there(ctx):

        def leave(member: _Member) -> None:
            del live[member.trial.trial_id]
            beat.discard(member.trial.trial_id)

        def start(claim: Claim) -> tuple[_Member, Start] | None:
            beat.add(claim.trial_id)  # beating from its claim: building takes a while
            member = live[claim.trial_id] = _Member(open_trial(ctx, claim), claim.slot)
            # Its params are suggested now, while the study's sampler is this claim's.
            begun = _guarded(ctx, partial(start_structured, member.trial, ctx))
            if not isinstance(begun, Exception):
                return member, begun
            leave(member)
            on_result(_ended(ctx, member, None, begun))
            return None

        try:
            while True:
                opened: dict[int, tuple[_Member, Start]] = {}
                while len(live) < size:
                    claim = next_claim(not live)
                    if claim is None:
                        break
                    started = start(claim)
                    if started is not None:
                        opened[claim.trial_id] = started
                _place(ctx, opened, populations, noted, leave, on_result)
                if not live:
                    return
                for key, population in list(populations.items()):
                    if ctx.stop.requested:
                        raise KeyboardInterrupt
                    ctx.stop.in_objective = True
                    try:
                        ends = population.step()
                    finally:
                        ctx.stop.in_objective = False
                    for end in ends:
                        member = live[cast(int, end.key)]
                        leave(member)
                        on_result(_ended(ctx, member, end.result, end.error))
                    if not population:
                        del populations[key]
        except (KeyboardInterrupt, TunesvcError):
            for member in list(live.values()):
                interrupt(ctx, member.trial)
            raise


def _guarded(ctx: TrialContext, call: Callable[[], Start]) -> Start | Exception:
    """``call()`` as the objective's code: a stop request interrupts it, and what it raises
    (but KeyboardInterrupt) is the trial's outcome, returned."""
    ctx.stop.in_objective = True
    try:
        if ctx.stop.requested:
            raise KeyboardInterrupt
        return call()
    except Exception as e:  # the user's build raised (or the trial was lost): handed over
        return e
    finally:
        ctx.stop.in_objective = False


def _place(
    ctx: TrialContext,
    opened: dict[int, tuple[_Member, Start]],
    populations: dict[Hashable, Population],
    noted: set[str],
    leave: Callable[[_Member], None],
    on_result: Callable[[TrialResult], None],
) -> None:
    """Put each started trial in the population of its structure (a new one if none runs),
    or, when its setup cannot be vectorized, run it alone to its end."""
    from tunesvc.training import Population, group_setups, population_key

    setups = {tid: start[0] for tid, (_, start) in opened.items()}
    try:
        groups, alone = group_setups(setups)
    except Exception:  # noqa: BLE001 - a model that does not even build: see _one_by_one
        groups, alone = _one_by_one(setups)
    for tid, reason in alone.items():
        member, begun = opened[tid]
        if reason not in noted:
            noted.add(reason)
            ctx.emit(WorkerEvent("note", ctx.worker, member.trial.number,
                                 message=f"population: trial {member.trial.number}: {reason}"))
        leave(member)
        on_result(run_opened(ctx, member.trial, member.slot, begun))
    for group in groups:
        key = population_key(opened[group[0]][1][0])
        population = populations.get(key)
        if population is None:
            population = populations[key] = Population(device=ctx.device)
        for tid in group:
            member, (setup, on_epoch) = opened[tid]
            try:
                population.add(tid, setup, epochs=ctx.epochs, seed=ctx.spec.seed,
                               metric=ctx.metric, on_epoch=on_epoch,
                               checkpoint_path=ctx.checkpoint_path(member.slot))
            except TunesvcError as e:  # a checkpoint that does not fit, ...: as fit would fail
                leave(member)
                on_result(_ended(ctx, member, None, e))
        if not population:
            del populations[key]


def _one_by_one(setups: Mapping[int, TrainingSetup]) -> tuple[list[list[int]], dict[int, str]]:
    """:func:`group_setups` setup by setup: one whose model or data raises when built trains
    alone, where ``fit`` raises the same and fails its trial with the error, as it would
    without a population."""
    from tunesvc.training import group_setups

    groups: list[list[int]] = []
    alone: dict[int, str] = {}
    for tid, setup in setups.items():
        try:
            group, reason = group_setups({tid: setup})
        except Exception as e:  # noqa: BLE001 - the trial's own error, met again by fit
            alone[tid] = f"its setup raised {type(e).__name__}: {e}; this trial trains alone"
            continue
        groups += group
        alone.update(reason)
    return groups, alone


def _ended(
    ctx: TrialContext, member: _Member, result: FitResult | None, error: Exception | None
) -> TrialResult:
    """Record how a member ended (as a trial run alone would): with ``result`` from its
    population, or ``error`` raised by its start or its ``on_epoch``."""
    trial = member.trial
    if isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
        return lost_trial(ctx, trial)  # failed by another worker: its retry runs it
    if error is not None:
        return end_trial(ctx, trial, error_ending(ctx, trial, error))
    assert result is not None
    return end_trial(ctx, trial, fit_ending(trial, result))
