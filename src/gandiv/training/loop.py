"""The training loop shared by every objective.

One function, `train`, owns the step order, the cadences (log, evaluate, checkpoint), the
non-finite check, signal handling and exact resumption. Losses are accumulated on the device and
read back only at the logging cadence (each read is a host-device sync point); the bookkeeping
costs a handful of operators per step (see `_nonfinite_steps`), not one per check per loss.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
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


@dataclass
class Cadence:
    """How long to train and how often to log, evaluate, checkpoint and draw (0 = at the end)."""

    steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    frame_every: int = 0  # animation frames (0 = none)
    figures_every: int = 0  # figure redraws (0 = only at the end, by the caller)

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


def _nonfinite_steps(sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]) -> None:
    """Count, per loss, the steps at whose end its running sum was not finite (no sync).

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


def train(
    *,
    run: RunDirectory,  # writes metrics, checkpoints (the loop's only side effects)
    splits: BatchSource,  # training batches (the held-out split is not touched here)
    model: GenerativeModel,  # the model being fitted
    objective: Objective,  # the loss the model minimises
    optimizer: torch.optim.Optimizer,  # steps the model's parameters
    critic_optimizer: torch.optim.Optimizer | None,  # steps the critic's (adversarial objectives)
    critic_steps: int,  # critic steps before each model step
    generator: torch.Generator,  # every random draw of training: batches and model noise
    batch_size: int,  # data points per step
    cadence: Cadence,  # steps, and the log/eval/checkpoint cadences
    evaluate: Callable[[int], dict[str, float]] | None,  # ground-truth metrics at a step
    config: dict[str, Any],  # the run's resolved config, stored in every checkpoint
    figures: FigureSet | None = None,  # draws frames and figures at their cadences
    resume_from: dict[str, Any] | None = None,  # a loaded checkpoint to continue exactly
    progress: bool = True,  # show a progress bar when stderr is a terminal
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,  # around the losses
    agree_signal: Callable[[int | None], int | None] | None = None,  # the ranks' stop signal
) -> TrainResult:
    """Train `model` on `objective` for `cadence.steps` steps; return what the summary needs."""
    device = next(model.parameters()).device
    step = 0
    train_time = 0.0
    sums: dict[str, torch.Tensor] = {}
    count = 0
    nonfinite: dict[str, torch.Tensor] = {}  # per logged loss: steps since it became NaN/Inf
    if resume_from is not None:
        try:  # (the caller checks the device: a checkpoint resumes on its own device type)
            model.load_state_dict(resume_from["model"])
            objective.load_state_dict(resume_from["objective"])
            optimizer.load_state_dict(resume_from["optimizer"])
            if critic_optimizer is not None:
                critic_optimizer.load_state_dict(resume_from["critic_optimizer"])
            generator.set_state(resume_from["generator"])
            torch.set_rng_state(resume_from["torch_rng"])
            splits.load_state_dict(resume_from.get("splits") or {})  # drawn, not yet used
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise UserError(
                str(run.checkpoint_path),
                f"does not match this run's config ({str(err).splitlines()[0].rstrip(':')})",
            ) from None
        step = int(resume_from["step"])
        train_time = float(resume_from["train_time_s"])
        sums = {k: v.to(device) for k, v in resume_from["loss_sums"].items()}
        count = int(resume_from["loss_count"])
        # (stored as the first bad step, −1 for none, the format every checkpoint has)
        nonfinite = {
            k: torch.where(v >= 0, step - v + 1, 0).to(device)
            for k, v in resume_from["first_bad"].items()
        }
        if figures is not None and resume_from.get("figures") is not None:
            figures.load_state_dict(resume_from["figures"])
        run.truncate_metrics(int(resume_from["metrics_bytes"]))
    start_step = step
    result = TrainResult(step, train_time, 0, 0.0)

    def accumulate(name: str, value: torch.Tensor) -> None:
        """Add a detached loss to the running sum of `name` (no sync)."""
        if name not in sums:
            sums[name] = torch.zeros((), device=device)
            nonfinite[name] = torch.zeros((), dtype=torch.long, device=device)
        sums[name].add_(value)

    def first_bad() -> dict[str, torch.Tensor]:
        """Per loss, the first step it was NaN/Inf (−1: none), from the counts (no sync)."""
        return {k: torch.where(c > 0, step - c + 1, -1) for k, c in nonfinite.items()}

    def check_finite() -> None:
        counts = {name: int(c) for name, c in nonfinite.items()}  # a sync point
        broken = sorted((step - c + 1, name) for name, c in counts.items() if c > 0)
        if broken:
            at, name = broken[0]
            raise NumericalError(f"the {name} became non-finite (NaN/Inf) at step {at}")
        for owner, module in (("model", model), ("objective", objective)):
            for name, p in module.named_parameters():
                if not torch.isfinite(p).all():
                    raise NumericalError(
                        f"{owner} parameter '{name}' became non-finite by step {step}"
                    )

    def checkpoint() -> None:
        check_finite()
        run.save_checkpoint(
            {
                "step": step,
                "model": model.state_dict(),
                "objective": objective.state_dict(),
                "optimizer": optimizer.state_dict(),
                "critic_optimizer": (
                    critic_optimizer.state_dict() if critic_optimizer is not None else None
                ),
                "generator": generator.get_state(),
                "splits": splits.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "loss_sums": {k: v.detach().cpu() for k, v in sums.items()},
                "loss_count": count,
                "first_bad": {k: v.cpu() for k, v in first_bad().items()},
                "metrics_bytes": run.sync_metrics(),
                "train_time_s": train_time + (time.perf_counter() - session_start),
                "config": config,
                "device": device.type,
                "figures": figures.state_dict() if figures is not None else None,
            }
        )

    session_start = time.perf_counter()
    spent = {"eval": 0.0, "frames": 0.0, "checkpoint": 0.0}  # seconds not spent training
    signals = _StopSignals()
    bar = tqdm(
        total=cadence.steps,
        initial=step,
        disable=None if progress else True,
        dynamic_ncols=True,
        desc="train",
        unit="step",
    )
    with signals.installed(), logging_redirect_tqdm(), bar:
        if step == 0 and evaluate is not None and cadence.eval_every > 0:
            result.last_eval = evaluate(0)
            run.append_metrics({"step": 0, **result.last_eval, "time_s": 0.0})
        if step == 0 and figures is not None and cadence.frame_every > 0:
            figures.frame(0)
        model.train()
        while step < cadence.steps:
            objective.begin_step(step)
            if critic_optimizer is not None:
                for _ in range(critic_steps):
                    batch = splits.batch(batch_size, generator)
                    with autocast():
                        critic_loss, metrics = objective.critic_loss(model, batch, generator)
                    critic_optimizer.zero_grad(set_to_none=True)
                    critic_loss.backward()
                    critic_optimizer.step()
                    objective.after_critic_step()
                    with torch.no_grad():
                        for name, value in metrics.items():
                            accumulate(name, value / critic_steps if critic_steps > 1 else value)
            batch = splits.batch(batch_size, generator)
            with autocast():
                loss = objective.model_loss(model, batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                accumulate("loss", loss)
                _nonfinite_steps(sums, nonfinite)
            count += 1

            record: dict[str, Any] = {}
            final = step == cadence.steps
            if Cadence.due(step, cadence.log_every) or final:
                check_finite()  # a sync point: reads the device
                means = {k: float(v) / count for k, v in sums.items()}
                record.update(means)
                result.last_losses = means
                for v in sums.values():
                    v.zero_()
                count = 0
                bar.set_postfix(loss=f"{means['loss']:.4g}", refresh=False)
            if evaluate is not None and (Cadence.due(step, cadence.eval_every) or final):
                check_finite()  # never evaluate (or log) a broken model
                started = time.perf_counter()
                result.last_eval = evaluate(step)
                record.update(result.last_eval)
                spent["eval"] += time.perf_counter() - started
            if record:
                elapsed = train_time + time.perf_counter() - session_start
                run.append_metrics({"step": step, **record, "time_s": round(elapsed, 4)})
                bar.update(step - bar.n)
            if figures is not None:
                started = time.perf_counter()
                if Cadence.due(step, cadence.frame_every) or (final and cadence.frame_every > 0):
                    figures.frame(step)
                if Cadence.due(step, cadence.figures_every) and not final:
                    figures.write(run, step, run.read_metrics(), final=False)
                spent["frames"] += time.perf_counter() - started
            if Cadence.due(step, cadence.checkpoint_every) or final:
                started = time.perf_counter()
                checkpoint()
                spent["checkpoint"] += time.perf_counter() - started
            if agree_signal is not None:  # (torchrun) every rank stops at the same step
                signals.signum = agree_signal(signals.signum)
            if signals.signum is not None and not final:
                log.warning("signal %d received: checkpoint at step %d", signals.signum, step)
                checkpoint()
                if not signals.hand_over():
                    raise Interrupted(signals.signum)
        bar.update(step - bar.n)

    if step == start_step:  # resumed after the final checkpoint: the last logged values stand
        records = run.read_metrics()
        result.last_losses = _last_values(records, ("loss", "critic_loss", "bound"))
        result.last_eval = _last_values(records, ("kl_pq", "kl_qp", "js", "objective_divergence"))
    session_time = time.perf_counter() - session_start
    result.step = step
    result.train_time_s = train_time + session_time
    result.steps_this_session = step - start_step
    result.session_train_time_s = session_time - sum(spent.values())
    result.eval_time_s = spent["eval"]
    result.frames_time_s = spent["frames"]
    result.checkpoint_time_s = spent["checkpoint"]
    return result
