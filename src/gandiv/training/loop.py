"""The training loop shared by every objective.

One function, `train_runs`, owns the cadences (log, evaluate, checkpoint, frames), the non-finite
check, signal handling and exact resumption, for one run or for a vectorised group of runs trained
in lockstep; a step function (`ObjectiveStep` for one run, `gandiv.training.vectorized.
VectorizedStep` for a group) owns the step itself. `train` is the one-run form. Losses are
accumulated on the device, one entry per run, and read back only at the logging cadence (each
read is a host-device sync point); the bookkeeping costs a handful of operators per step (see
`_nonfinite_steps`) whatever the number of runs.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import Any, Protocol

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gandiv.errors import Interrupted, NumericalError, UserError
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective
from gandiv.training.figures import FigureSet
from gandiv.training.run_dir import RunDirectory

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    """Where the loop's batches come from (`ToySplits`, `ImageSplits`): batches, and what a
    checkpoint must hold, besides the generator's state, to draw the same batches on resume."""

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RateSchedule:
    """Every optimiser's learning rate over the run: its own configured rate times `factor`.

    `linear` and `cosine` fall from 1 at the first step to `end_factor` at the last: the late
    steps of a game stop throwing the model around its equilibrium (the final iterate's noise
    scales with the rate). The factor is a function of the step and the run's length alone, so a
    resumed run continues on the same curve without any state of its own; each optimiser keeps
    its configured rate as `initial_lr` in its parameter groups (torch's scheduler convention),
    which its checkpointed state carries.
    """

    shape: str = "constant"  # constant | linear | cosine
    end_factor: float = 1.0

    def factor(self, step: int, steps: int) -> float:
        """The factor of step `step` (0-based) of a run of `steps` steps."""
        if self.shape == "constant" or steps <= 1:
            return 1.0
        t = min(step / (steps - 1), 1.0)
        falling = 1.0 - t if self.shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
        return self.end_factor + (1.0 - self.end_factor) * falling

    def apply(
        self, optimizers: Sequence[torch.optim.Optimizer | None], step: int, steps: int
    ) -> None:
        """Set the rates of `optimizers` for step `step`."""
        if self.shape == "constant":
            return
        factor = self.factor(step, steps)
        for optimizer in optimizers:
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


@dataclass
class Cadence:
    """How long to train, how the rates move over that length, and how often to log, evaluate,
    checkpoint and draw (0 = at the end)."""

    steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    frame_every: int = 0  # animation frames (0 = none)
    figures_every: int = 0  # figure redraws (0 = only at the end, by the caller)
    rates: RateSchedule = field(default_factory=RateSchedule)

    @staticmethod
    def due(step: int, every: int) -> bool:
        return every > 0 and step % every == 0


@dataclass
class TrainResult:
    """What the loop reports back for the summary."""

    step: int
    train_time_s: float
    steps_this_session: int
    session_train_time_s: float  # this session's loop time less evaluation and checkpoints
    # this session's time (s) evaluating, drawing frames and figures, and writing checkpoints
    eval_time_s: float = 0.0
    frames_time_s: float = 0.0
    checkpoint_time_s: float = 0.0
    last_losses: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    # training stopped for this run: a loss or parameter became non-finite (the others go on)
    error: NumericalError | None = None


def _nonfinite_steps(sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]) -> None:
    """Count, per loss and run, the steps at whose end its running sum was not finite (no sync).

    A NaN or ±Inf added to a running sum keeps it non-finite until the sum is read and reset at the
    next log line, where a non-finite sum stops training: a count c > 0 read at step s means the
    loss first became non-finite at step s − c + 1. `t − t` is 0 for finite t and NaN otherwise
    (three operators per loss, where a per-step `isfinite`/`where` record of the first bad step
    costs nine).
    """
    for name, total in sums.items():
        counts[name].add_((total - total).ne(0))


def _last_values(records: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """The keys of the last metrics line that has the first of them."""
    last: dict[str, Any] = next((r for r in reversed(records) if keys[0] in r), {})
    return {k: last[k] for k in keys if k in last}


class _StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps.

    A job scheduler may have installed handlers of its own before the loop started (submitit: USR2
    means "preempted or near the time limit: checkpoint and requeue", SIGTERM is to be ignored).
    Those signals are caught too; after writing its checkpoint the loop hands the signal on to the
    scheduler's handler (`hand_over`), which requeues the job or lets training go on.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    @staticmethod
    def _scheduler_handler(handler: Any) -> bool:
        return callable(handler) and handler is not signal.default_int_handler

    @contextmanager
    def installed(self) -> Iterator[_StopSignals]:
        signums = [signal.SIGINT, signal.SIGTERM]
        signums += [
            s
            for s in (getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None))
            if s is not None and self._scheduler_handler(signal.getsignal(s))
        ]
        self.previous = {s: signal.signal(s, self._handle) for s in signums}
        try:
            yield self
        finally:
            for s, handler in self.previous.items():
                signal.signal(s, handler)

    def hand_over(self) -> bool:
        """Pass the signal caught to the scheduler's handler installed before the loop's, if any.
        False when there is none (the loop stops: Interrupted); True when that handler returned
        (it ignored the signal: training goes on). A handler that requeues the job exits."""
        signum = self.signum
        handler = self.previous.get(signum) if signum is not None else None
        if signum is None or handler is None or not self._scheduler_handler(handler):
            return False
        self.signum = None
        handler(signum, None)
        return True


@dataclass
class RunTask:
    """One run's parts, as the loop trains them."""

    run: RunDirectory  # writes metrics, checkpoints (the loop's only side effects)
    splits: BatchSource  # training batches (the held-out split is not touched here)
    model: GenerativeModel  # the model being fitted
    objective: Objective  # the loss the model minimises
    optimizer: torch.optim.Optimizer  # steps the model's parameters
    critic_optimizer: torch.optim.Optimizer | None  # steps the critic's (adversarial objectives)
    generator: torch.Generator  # every random draw of training: batches and model noise
    evaluate: Callable[[int], dict[str, float]] | None  # ground-truth metrics at a step
    config: dict[str, Any]  # the run's resolved config, stored in every checkpoint
    figures: FigureSet | None = None  # draws frames and figures at their cadences
    resume_from: dict[str, Any] | None = None  # a loaded checkpoint to continue exactly

    def training_state(self) -> dict[str, Any]:
        """What an exact resume restores (`load`): the networks, the optimisers, and every random
        state the run draws from (its generator, torch's global stream, the batches drawn ahead),
        and the figures' frames. The loop's checkpoint adds its step, loss sums and timings."""
        return {
            "model": _owned(self.model.state_dict()),
            "objective": _owned(self.objective.state_dict()),
            "optimizer": _owned(self.optimizer.state_dict()),
            "critic_optimizer": (
                _owned(self.critic_optimizer.state_dict())
                if self.critic_optimizer is not None
                else None
            ),
            "generator": self.generator.get_state(),
            "splits": self.splits.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "figures": self.figures.state_dict() if self.figures is not None else None,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore the training state of a checkpoint (the caller checks its device)."""
        try:
            self.model.load_state_dict(state["model"])
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.critic_optimizer is not None:
                self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.splits.load_state_dict(state.get("splits") or {})  # drawn, not yet used
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise UserError(
                str(self.run.checkpoint_path),
                f"does not match this run's config ({str(err).splitlines()[0].rstrip(':')})",
            ) from None
        if self.figures is not None and state.get("figures") is not None:
            self.figures.load_state_dict(state["figures"])

    def nonfinite_parameter(self, step: int) -> NumericalError | None:
        for owner, module in (("model", self.model), ("objective", self.objective)):
            for name, p in module.named_parameters():
                if not torch.isfinite(p).all():
                    return NumericalError(
                        f"{owner} parameter '{name}' became non-finite by step {step}"
                    )
        return None


def _owned(state: Any) -> Any:
    """`state` with every tensor that views a larger storage copied out (a run of a vectorised
    group holds views into its group's stacked parameters; saved as they are, each checkpoint
    would hold the whole group's)."""
    if isinstance(state, torch.Tensor):
        return state.clone() if state.untyped_storage().nbytes() > state.nbytes else state
    if isinstance(state, dict):
        return {k: _owned(v) for k, v in state.items()}
    return state


class StepFunction(Protocol):
    """One training step of every run: returns the detached losses to log, each of shape () for
    one run or (K,) for K runs."""

    def __call__(self, step: int) -> dict[str, torch.Tensor]: ...


class ObjectiveStep:
    """One run's step: `critic_steps` critic updates, then one model update."""

    def __init__(
        self,
        task: RunTask,
        critic_steps: int,
        batch_size: int,
        autocast: Callable[[], AbstractContextManager[object]] = nullcontext,  # around the losses
    ) -> None:
        self.task, self.critic_steps, self.batch_size = task, critic_steps, batch_size
        self.autocast = autocast

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        t, n = self.task, self.batch_size
        t.objective.begin_step(step)
        logged: dict[str, torch.Tensor] = {}
        if t.critic_optimizer is not None:
            for _ in range(self.critic_steps):
                batch = t.splits.batch(n, t.generator)
                with self.autocast():
                    critic_loss, metrics = t.objective.critic_loss(t.model, batch, t.generator)
                t.critic_optimizer.zero_grad(set_to_none=True)
                critic_loss.backward()
                t.critic_optimizer.step()
                t.objective.after_critic_step()
                add_critic_metrics(logged, metrics, self.critic_steps)
        batch = t.splits.batch(n, t.generator)
        with self.autocast():
            loss = t.objective.model_loss(t.model, batch, t.generator)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.optimizer.step()
        logged["loss"] = loss.detach()
        return logged


def add_critic_metrics(
    logged: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor], critic_steps: int
) -> None:
    """Add one critic step's metrics to the step's: their mean over the critic steps."""
    for name, value in metrics.items():
        if critic_steps == 1:
            logged[name] = value
        else:
            logged[name] = logged.get(name, 0) + value / critic_steps


def train(
    task: RunTask,
    *,
    critic_steps: int,
    batch_size: int,
    cadence: Cadence,
    progress: bool = True,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
    agree_signal: Callable[[int | None], int | None] | None = None,
) -> TrainResult:
    """Train one run for `cadence.steps` steps, `critic_steps` critic steps before each model
    step on batches of `batch_size`, the losses computed under `autocast`; return what the
    summary needs. A loss or parameter turning non-finite raises NumericalError. `progress`: a
    progress bar when stderr is a terminal; `agree_signal`: see `train_runs`."""
    step = partial(
        ObjectiveStep, critic_steps=critic_steps, batch_size=batch_size, autocast=autocast
    )
    (result,) = train_runs(
        [task], lambda tasks: step(tasks[0]), cadence, progress, agree_signal=agree_signal
    )
    if result.error is not None:
        raise result.error
    return result


def train_runs(
    tasks: Sequence[RunTask],
    make_step: Callable[[Sequence[RunTask]], StepFunction],
    cadence: Cadence,
    progress: bool = True,
    description: str = "train",
    agree_signal: Callable[[int | None], int | None] | None = None,
    on_failure: Callable[[int, NumericalError], None] | None = None,
) -> list[TrainResult]:
    """Train `tasks` in lockstep for `cadence.steps` steps, with the step function `make_step`
    builds for them once their checkpoints (if resumed) are loaded.

    Each run keeps its own files, evaluation, figures and checkpoints, exactly as if trained
    alone. A run whose loss or parameters turn non-finite stops there (its `TrainResult.error`
    says why; nothing more is written for it) and the others go on. A signal checkpoints every
    run and raises Interrupted (under torchrun, `agree_signal` makes every rank stop at the same
    step). Resumed runs must all stand at the same step. `on_failure(k, error)` is called as run k
    stops on a non-finite value, while the others train on.
    """
    size = len(tasks)
    device = next(tasks[0].model.parameters()).device
    step = 0
    train_time = [0.0] * size
    sums: dict[str, torch.Tensor] = {}  # per logged loss, one running sum per run
    count = 0
    nonfinite: dict[str, torch.Tensor] = {}  # per logged loss and run: steps since NaN/Inf
    resumed = [t.resume_from for t in tasks if t.resume_from is not None]
    if resumed:
        steps = {int(state["step"]) for state in resumed}
        if len(resumed) != size or len(steps) != 1:
            raise ValueError("the runs of a group must all start at the same step")
        for t in tasks:
            assert t.resume_from is not None
            t.load(t.resume_from)
        first = resumed[0]
        step, count = int(first["step"]), int(first["loss_count"])
        train_time = [float(state["train_time_s"]) for state in resumed]
        for name in first["loss_sums"]:
            sums[name] = torch.stack([s["loss_sums"][name] for s in resumed]).to(device)
            bad = torch.stack([s["first_bad"][name] for s in resumed])
            # (stored as the first bad step, −1 for none, the format every checkpoint has)
            nonfinite[name] = torch.where(bad >= 0, step - bad + 1, 0).to(device)
        for t, state in zip(tasks, resumed, strict=True):
            t.run.truncate_metrics(int(state["metrics_bytes"]))
    step_function = make_step(tasks)
    start_step = step
    results = [TrainResult(step, train_time[k], 0, 0.0) for k in range(size)]
    alive = [True] * size

    def live() -> list[int]:
        return [k for k in range(size) if alive[k]]

    def accumulate(name: str, value: torch.Tensor) -> None:
        """Add detached losses (one per run, or one for the only run) to the sums (no sync)."""
        if name not in sums:
            sums[name] = torch.zeros(size, device=device)
            nonfinite[name] = torch.zeros(size, dtype=torch.long, device=device)
        sums[name].add_(value)

    def first_bad(k: int) -> dict[str, torch.Tensor]:
        """Per loss, the first step run k's was NaN/Inf (−1: none), from the counts (no sync)."""
        return {n: torch.where(c[k] > 0, step - c[k] + 1, -1) for n, c in nonfinite.items()}

    checked = [-1]  # the step last checked (log, evaluation and checkpoint may fall on one)

    def check_finite() -> None:
        """Stop every run whose losses or parameters became non-finite (a sync point)."""
        if checked[0] == step:
            return
        checked[0] = step
        counts = {name: c.tolist() for name, c in nonfinite.items()}
        for k in live():
            broken = sorted((step - c[k] + 1, name) for name, c in counts.items() if c[k] > 0)
            error = (
                NumericalError(
                    f"the {broken[0][1]} became non-finite (NaN/Inf) at step {broken[0][0]}"
                )
                if broken
                else tasks[k].nonfinite_parameter(step)
            )
            if error is not None:
                alive[k] = False
                results[k].error = error
                if on_failure is not None:
                    on_failure(k, error)

    def checkpoint(k: int) -> None:
        t = tasks[k]
        t.run.save_checkpoint(
            {
                "step": step,
                **t.training_state(),
                "loss_sums": {n: v[k].detach().cpu().clone() for n, v in sums.items()},
                "loss_count": count,
                "first_bad": {n: v.cpu() for n, v in first_bad(k).items()},
                "metrics_bytes": t.run.sync_metrics(),
                "train_time_s": train_time[k] + (time.perf_counter() - session_start),
                "config": t.config,
                "device": device.type,
            }
        )

    def checkpoint_all() -> None:
        check_finite()
        for k in live():
            checkpoint(k)

    session_start = time.perf_counter()
    spent = [{"eval": 0.0, "frames": 0.0, "checkpoint": 0.0} for _ in range(size)]

    @contextmanager
    def timing(k: int, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        spent[k][kind] += time.perf_counter() - started

    signals = _StopSignals()
    bar = tqdm(
        total=cadence.steps,
        initial=step,
        disable=None if progress else True,
        dynamic_ncols=True,
        desc=description,
        unit="step",
    )
    with signals.installed(), logging_redirect_tqdm(), bar:
        for k, t in enumerate(tasks):
            if step == 0 and t.evaluate is not None and cadence.eval_every > 0:
                with timing(k, "eval"):
                    results[k].last_eval = t.evaluate(0)
                t.run.append_metrics({"step": 0, **results[k].last_eval, "time_s": 0.0})
            if step == 0 and t.figures is not None and cadence.frame_every > 0:
                t.figures.frame(0)
            t.model.train()
        optimizers = [o for t in tasks for o in (t.optimizer, t.critic_optimizer)]
        while step < cadence.steps and any(alive):
            cadence.rates.apply(optimizers, step, cadence.steps)
            logged = step_function(step)
            step += 1
            with torch.no_grad():
                for name, value in logged.items():
                    accumulate(name, value)
                _nonfinite_steps(sums, nonfinite)
            count += 1

            records: list[dict[str, Any]] = [{} for _ in range(size)]
            final = step == cadence.steps
            if Cadence.due(step, cadence.log_every) or final:
                check_finite()
                means = {name: (v / count).tolist() for name, v in sums.items()}
                for k in live():
                    results[k].last_losses = {name: m[k] for name, m in means.items()}
                    records[k].update(results[k].last_losses)
                for v in sums.values():
                    v.zero_()
                count = 0
                if live():
                    shown = results[live()[0]].last_losses["loss"]
                    bar.set_postfix(loss=f"{shown:.4g}", refresh=False)
            if Cadence.due(step, cadence.eval_every) or final:
                check_finite()  # never evaluate (or log) a broken model
                for k in live():
                    evaluate = tasks[k].evaluate
                    if evaluate is not None:
                        with timing(k, "eval"):
                            results[k].last_eval = evaluate(step)
                        records[k].update(results[k].last_eval)
            frame = Cadence.due(step, cadence.frame_every) or (final and cadence.frame_every > 0)
            redraw = Cadence.due(step, cadence.figures_every) and not final
            for k in live() if any(records) or frame or redraw else ():
                t = tasks[k]
                if records[k]:
                    elapsed = train_time[k] + time.perf_counter() - session_start
                    t.run.append_metrics({"step": step, **records[k], "time_s": round(elapsed, 4)})
                if t.figures is not None and (frame or redraw):
                    with timing(k, "frames"):
                        if frame:
                            t.figures.frame(step)
                        if redraw:
                            t.figures.write(t.run, step, t.run.read_metrics(), final=False)
            if any(records):
                bar.update(step - bar.n)
            if Cadence.due(step, cadence.checkpoint_every) or final:
                check_finite()
                for k in live():
                    with timing(k, "checkpoint"):
                        checkpoint(k)
            stop = signals.signum
            if agree_signal is not None:  # (torchrun) every rank stops at the same step, on the
                # agreed value; a signal caught during the agreement stays set for the next one
                stop = agree_signal(stop)
                if stop is not None:
                    signals.signum = stop
            if stop is not None and not final:
                log.warning("signal %d received: checkpoint at step %d", stop, step)
                checkpoint_all()
                if not signals.hand_over():
                    raise Interrupted(stop, str(tasks[0].run.path) if size == 1 else None)
        bar.update(step - bar.n)

    session_time = time.perf_counter() - session_start
    overhead = sum(sum(s.values()) for s in spent)
    for k, (t, result) in enumerate(zip(tasks, results, strict=True)):
        if step == start_step:  # resumed after the final checkpoint: the last logged values stand
            records = t.run.read_metrics()
            result.last_losses = _last_values(records, ("loss", "critic_loss", "bound"))
            result.last_eval = _last_values(
                records, ("kl_pq", "kl_qp", "js", "objective_divergence")
            )
        result.step = step
        result.train_time_s = train_time[k] + session_time
        result.steps_this_session = step - start_step
        result.session_train_time_s = session_time - overhead
        result.eval_time_s = spent[k]["eval"]
        result.frames_time_s = spent[k]["frames"]
        result.checkpoint_time_s = spent[k]["checkpoint"]
    return results
