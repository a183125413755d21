"""`gandiv train`: validate the config, build the run's objects, train, write the run directory.

The order matters for the user-error contract: the whole config is validated and every object
is built (`prepare`) before the first training step, so a bad input stops with one line and
leaves no half-trained run behind. A resumed run is checked against its checkpoint first: only
`RESUMABLE_KEYS` may change, and the metrics log must be the one the checkpoint recorded.

In a sweep under the vectorized launcher a job that can join a vectorised group is only prepared
here and set aside (`gandiv.training.groups`); the launcher trains it with its group at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from functools import partial
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gandiv import config as C
from gandiv.build import (
    OBJECTIVE_CLASSES,
    build_dataset,
    build_model,
    build_objective,
    build_optimizer,
    check_combination,
    memory_needs,
    mmd_settings,
    resolve_device,
    unused_mmd_keys,
)
from gandiv.commands.runs import (
    check_memory,
    check_threads,
    ideal_search,
    image_size,
    nonfinite_parameters,
    run_figures,
    step_in_range,
)
from gandiv.data.images import ImageData, ImageSplits
from gandiv.data.splits import ToySplits
from gandiv.data.toy import Mixture, ToyData
from gandiv.errors import (
    EXIT_NUMERICAL,
    EXIT_USER_ERROR,
    Interrupted,
    NumericalError,
    UserError,
    first_line,
    out_of_memory,
)
from gandiv.evaluation.ground_truth import ground_truth_metrics
from gandiv.evaluation.ideal import IdealSearch
from gandiv.evaluation.report import eval_generator, ideal_block
from gandiv.evaluation.spread import has_spread_metrics, spread_metrics
from gandiv.models import GaussianModel
from gandiv.objectives.likelihood import Direct
from gandiv.training.distributed import (
    agree_signal,
    current,
    rank_checkpoint,
    rank_seed,
    replicate,
    run_directory,
)
from gandiv.training.finish import write_final_files
from gandiv.training.groups import consoles, defer, recording_crash
from gandiv.training.health import RunSettings, assess, parameter_change, warning_line
from gandiv.training.locks import LOCK_NAME, lock_directory, release_lock
from gandiv.training.loop import Cadence, RateSchedule, RunTask, TrainResult
from gandiv.training.loop import train as train_loop
from gandiv.training.run_dir import RunDirectory
from gandiv.training.speed import StepPrecision, compile_networks, resolve_precision, tune_device
from gandiv.training.vectorized import noise_shape, unvectorizable

log = logging.getLogger("gandiv")


def _job_overrides() -> list[str]:
    """The task overrides of this job, without ``resume=``, last value per key."""
    latest: dict[str, str] = {}
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0]
        if key.lstrip("+~") != "resume":
            latest.pop(key, None)
            latest[key] = override
    return list(latest.values())


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config containers."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _check_checkpoint(run: RunDirectory, state: dict[str, Any]) -> None:
    """A checkpoint to continue from holds finite parameters and a step its run could reach."""
    try:
        planned = int(state["config"]["trainer"]["steps"])
    except (KeyError, TypeError, ValueError):
        raise UserError(
            str(run.checkpoint_path),
            "holds no readable trainer.steps in its config; the file is damaged, so the run "
            "cannot be resumed from it",
        ) from None
    if not step_in_range(state, planned):
        raise UserError(
            str(run.checkpoint_path),
            f"records step {state.get('step')!r}, which its run of {planned} steps cannot have "
            "reached; the file is damaged, so the run cannot be resumed from it",
        )
    bad = nonfinite_parameters(state)
    if bad:
        raise UserError(
            str(run.checkpoint_path),
            # (named "model NAME", as this message always has)
            f"holds non-finite values ({', '.join(b.replace('.', ' ', 1) for b in bad[:3])}); "
            "a run cannot continue from them: "
            "train a new run (lower trainer.lr, or another trainer.seed)",
        )


def _check_resumable(
    run: RunDirectory, state: dict[str, Any], config: dict[str, Any], steps: int
) -> None:
    _check_checkpoint(run, state)
    allowed = C.RESUMABLE_KEYS
    changed = [k for k in differences(state["config"], config) if k not in allowed]
    if changed:
        may = ", ".join(sorted(allowed))
        raise UserError(
            "resume",
            f"{', '.join(changed)} differ from the run's config; resuming may only change {may}",
        )
    trained = state["config"]["trainer"]
    step = int(state["step"])
    finished = run.summary_path.is_file() and run.status() in ("completed", "failed")
    if step > steps or (step == steps and finished):
        extend = (
            "pass a larger trainer.steps to extend it"
            if trained["lr_schedule"] == "constant"
            else "its rates decayed over its steps, so train a new run to train longer"
        )
        raise UserError("trainer.steps", f"the run already reached step {state['step']}; {extend}")
    if trained["lr_schedule"] != "constant" and trained["steps"] != steps:
        raise UserError(
            "trainer.steps",
            f"the run's rates decay over its {trained['steps']} steps "
            f"(trainer.lr_schedule={trained['lr_schedule']}), so it cannot be resumed with "
            f"another length; resume it with trainer.steps={trained['steps']}, or train a new run",
        )
    logged = run.metrics_path.stat().st_size if run.metrics_path.is_file() else 0
    if logged < int(state["metrics_bytes"]):  # a resume would pad the log with zero bytes
        raise UserError(
            str(run.metrics_path),
            f"has {logged} bytes but the checkpoint recorded {state['metrics_bytes']}; the log "
            "was cut or replaced after the checkpoint, so the run cannot be resumed exactly",
        )


def _discard_unused(run: RunDirectory) -> None:
    """Remove a run directory Hydra created for a run that was refused before it started."""
    if not run.writes:  # (torchrun) the directory is rank 0's
        return
    if run.path.is_dir() and {p.name for p in run.path.iterdir()} <= {
        ".hydra",
        "train.log",
        LOCK_NAME,
    }:
        shutil.rmtree(run.path, ignore_errors=True)


# The instance-noise options of the adversarial objectives, used only with objective.noise set.
NOISE_KEYS = ("sigma", "sigma_start", "anneal_steps", "samples")


def train(cfg: DictConfig) -> None:
    """`gandiv train`: validate, build, train, write the run directory.

    Under the vectorized launcher (`gandiv.training.groups.deferring`) a job that can join a
    vectorised group is only validated and built here; `gandiv.cli.train_deferred` trains it
    with its group after the last job.
    """
    run = run_directory(HydraConfig.get().runtime.output_dir, current())
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if not multirun:  # (its lock was taken before Hydra wrote into its directory)
        _train(cfg, run, multirun)
        return
    lock_directory(run.path)  # a sweep's job: its own lock, held while it is written
    deferred = False
    try:
        deferred = _train(cfg, run, multirun)
    finally:
        if not deferred:  # (a deferred job's is released when the sweep ends)
            release_lock(run.path)


def _train(cfg: DictConfig, run: RunDirectory, multirun: bool) -> bool:
    """Train the job (True: set aside to train with its vectorised group later)."""
    try:
        try:
            prepared = prepare(cfg, run, multirun)
        except (MemoryError, RuntimeError) as err:  # beyond the estimate (`check_memory`)
            if not out_of_memory(err):
                raise
            raise UserError(
                "memory",
                f"ran out while building the run ({first_line(str(err)) or type(err).__name__}); "
                "ask for less: smaller networks, batches or samples",
            ) from None
    except UserError as err:
        if multirun:  # the sweep's table shows the failed job
            run.record_failure(str(err), EXIT_USER_ERROR)
        elif cfg.get("resume") is None:
            _discard_unused(run)
        raise
    if prepared is None:  # this sweep job had already completed
        return False
    if defer(prepared):
        return True
    with recording_crash([run], multirun):
        prepared.train_alone()
    return False


@dataclasses.dataclass
class PreparedRun:
    """A `gandiv train` job validated and built, its run directory set up, not yet trained."""

    task: RunTask
    config: C.TrainConfig
    device: torch.device
    precision: StepPrecision  # autocast around the step's losses
    data_dim: int
    images: bool
    resumed: bool
    started: float  # when preparing began (the run's wall time counts from here)
    job_num: int | None  # the job's number in a sweep
    log_file: str | None  # the job's log file and its format (Hydra's job logging)
    log_format: logging.Formatter | None
    console_format: logging.Formatter | None  # the job's console format
    ideal: IdealSearch | str  # the search for the target's ideal, or why there is none
    mixture: Mixture | None = None  # data with modes: summary.json gets the final mode metrics
    # the model's parameters as built, before any step or resumed checkpoint (run health)
    initial_parameters: dict[str, torch.Tensor] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.initial_parameters = {
            name: p.detach().clone() for name, p in self.task.model.named_parameters()
        }

    @property
    def run(self) -> RunDirectory:
        return self.task.run

    @property
    def batch_size(self) -> int:
        return self.config.trainer.batch_size

    @property
    def critic_steps(self) -> int:
        return self.config.trainer.critic_steps

    @property
    def progress(self) -> bool:
        return self.config.trainer.progress

    @property
    def cadence(self) -> Cadence:
        trainer, plot = self.config.trainer, self.config.plot
        return Cadence(
            trainer.steps,
            trainer.log_every,
            trainer.eval_every,
            trainer.checkpoint_every,
            plot.every,
            plot.figures_every,
            RateSchedule(trainer.lr_schedule, trainer.lr_end_factor),
        )

    def group_key(self) -> tuple[Any, ...] | None:
        """What the runs of one vectorised group share (None: this run trains alone): the
        networks' shapes, the data's dimension, the loop's shape and cadences, the step it
        starts from. Seeds, learning rates, betas and the loss (row, π, model step) may differ.
        Compiled networks (trainer.compile) train alone: a group runs its own stacked networks."""
        trainer = self.config.trainer
        if trainer.compile or unvectorizable(self.task.model, self.task.objective) is not None:
            return None
        return (
            repr(self.config.model),
            repr(self.config.critic),
            noise_shape(self.task.objective),
            self.data_dim,
            self.device,
            self.precision.name,
            trainer.batch_size,
            trainer.critic_steps,
            trainer.optimizer,
            trainer.threads,
            repr(self.cadence),
            self.task.resume_from["step"] if self.task.resume_from else 0,
        )

    def announce(self) -> None:
        config = self.config
        log.info(
            "%s: dataset=%s (%d-D) model=%s objective=%s device=%s, %s steps",
            "resuming " + str(self.run.path) if self.resumed else f"run directory {self.run.path}",
            config.dataset.name,
            self.data_dim,
            config.model.name,
            config.objective.name,
            self.device,
            config.trainer.steps,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.config.dataset.name,
            "model": self.config.model.name,
            "objective": self.config.objective.name,
            "precision": self.precision.name,
        }

    def apply_process_settings(self) -> None:
        """The process-wide settings this run trains with (a deferred run is trained after other
        jobs were prepared, each applying its own)."""
        if self.config.trainer.threads is not None:
            torch.set_num_threads(self.config.trainer.threads)
        tune_device(self.device)

    def train_alone(self) -> None:
        self.apply_process_settings()
        self.announce()
        try:
            result = train_loop(
                self.task,
                critic_steps=self.critic_steps,
                batch_size=self.batch_size,
                cadence=self.cadence,
                progress=self.progress,
                autocast=self.precision.autocast,
                agree_signal=agree_signal,
            )
        except NumericalError as err:
            self.failed(err)
            raise
        except Interrupted as err:
            self.interrupted(err)
            raise
        except (MemoryError, RuntimeError) as err:
            if not out_of_memory(err):
                raise
            self.out_of_memory(err)
        finally:
            self.run.close()
        try:
            self.finish(result)
        except (MemoryError, RuntimeError) as err:
            if not out_of_memory(err):
                raise
            self.out_of_memory(err)

    def out_of_memory(self, err: BaseException) -> None:
        """An allocation failed mid-run: one line, and summary.json says so; the last checkpoint
        (atomic) stands."""
        kept = (
            f"its last checkpoint ({self.run.checkpoint_path}) is intact: free memory, then "
            f"continue with resume={self.run.path}"
            if self.run.checkpoint_path.is_file()
            else "no checkpoint was saved"
        )
        reason = first_line(str(err)) or type(err).__name__
        error = UserError(
            str(self.run.path),
            f"ran out of memory while training ({reason}); {kept}, or train a new run with a "
            "smaller trainer.batch_size or smaller networks",
        )
        self.run.record_failure(str(error), EXIT_USER_ERROR, **self.summary())
        raise error from None

    def interrupted(self, err: Interrupted) -> None:
        """Say so in summary.json, unless the run had already stopped on a non-finite value."""
        if self.run.status() != "failed":
            summary = {**self.summary(), "status": "interrupted", "signal": err.signum}
            self.run.write_summary(summary)

    def failed(self, error: NumericalError) -> None:
        """Record in summary.json that the run stopped on a non-finite value."""
        self.run.record_failure(str(error), EXIT_NUMERICAL, **self.summary())

    def finish(self, result: TrainResult) -> None:
        """The run's final files: figures, samples, summary (with the fit against its ideal, and
        its health, whose warning is the log's last line)."""
        summary = self.summary()
        summary["ideal"] = ideal_block(self.ideal, self.task.model)
        health = write_final_files(
            self.run,
            self.task.model,
            result,
            summary,
            self.config.trainer.num_samples,
            self.started,
            self.device,
            self.task.figures,
            partial(self.health, result.step),
            self.mixture,
        )
        if self.images:
            log.info("images: figures/samples.png, samples.npy (uint8 NHWC)")
        warning = warning_line(health) if health is not None else None
        if warning is not None:
            log.warning("%s", warning)

    def health(
        self, step: int, records: list[dict[str, Any]], samples: np.ndarray | None, gap: Any
    ) -> dict[str, Any]:
        """The summary's health block (gandiv.training.health) of this run at its last `step`."""
        trainer, objective = self.config.trainer, self.config.objective
        adversarial = self.task.objective.uses_critic
        critic = self.config.critic if adversarial else None
        settings = RunSettings(
            objective=objective.name,
            adversarial=adversarial,
            lr_g=trainer.lr_g or trainer.lr,
            lr_d=(trainer.lr_d or trainer.lr) if adversarial else None,
            shared_lr=trainer.lr_g is None and trainer.lr_d is None,
            steps=trainer.steps,
            batch_size=trainer.batch_size,
            critic_steps=trainer.critic_steps,
            spectral_norm=getattr(critic, "spectral_norm", None),
            gradient_penalty=getattr(objective, "gradient_penalty", None),
            noise=getattr(objective, "noise", None) if adversarial else None,
            generator=getattr(objective, "generator", None),
            divergence=getattr(objective, "divergence", None),
            init_std=getattr(self.config.model, "init_std", None),
        )
        data = getattr(self.task.splits, "data", None)
        final = dict(self.task.model.named_parameters())
        return assess(
            records,
            settings,
            change=parameter_change(self.initial_parameters, final) if step > 0 else None,
            samples=samples,
            box=data.bounds().numpy() if isinstance(data, ToyData) else None,
            gap=gap if isinstance(gap, int | float) else None,
            annealed=getattr(objective, "sigma_start", None) is not None,
        )


def prepare(cfg: DictConfig, run: RunDirectory, multirun: bool) -> PreparedRun | None:
    """Validate a job's config and build its objects (resume: from the checkpoint); None for a
    sweep job that had already completed."""
    started = time.perf_counter()
    config = C.validate_train_config(cfg)
    trainer = config.trainer
    plain: dict[str, Any] = {
        str(k): v
        for k, v in OmegaConf.to_container(cfg, resolve=True).items()  # type: ignore[union-attr]
        if k != "resume"
    }

    state = None
    # A sweep's job that finds its own checkpoint was requeued (preempted or timed out under a
    # scheduler, e.g. submitit), or its sweep is run again into the same hydra.sweep.dir: it
    # continues exactly where it stopped; one that had already completed is kept as it is.
    fallback = None  # the warning of a resume from checkpoints/prev.pt
    if config.resume is not None or (multirun and run.checkpoint_path.is_file()):
        loaded, fallback = run.load_checkpoint_or_previous()
        state = rank_checkpoint(loaded, current())
        C.with_added_keys(state["config"])
        done = run.status() == "completed" and int(state["step"]) == trainer.steps
        if config.resume is None and done and not differences(state["config"], plain):
            log.info("%s: this job already completed; kept as it is", run.path)
            return None
        _check_resumable(run, state, plain, trainer.steps)

    data = build_dataset(config.dataset)
    check_combination(config.objective, config.model, data, trainer.batch_size, config.critic)
    device = resolve_device(trainer.device, "trainer.device")
    if state is not None and state["device"] != device.type:  # before the run's files change
        raise UserError(
            "trainer.device",
            f"the run was trained on {state['device']} and can only be resumed there "
            f"(this resume would use {device.type}); set trainer.device={state['device']}",
        )
    n_train = None if isinstance(data, ImageData) else config.dataset.n_train
    if n_train is not None and trainer.batch_size > n_train:
        raise UserError(
            "trainer.batch_size",
            f"{trainer.batch_size} is larger than the training set (dataset.n_train={n_train})",
        )
    check_threads("trainer.threads", trainer.threads)
    uses_critic = OBJECTIVE_CLASSES[config.objective.name].uses_critic
    check_memory(
        memory_needs(
            config,
            data.dim,
            config.critic if uses_critic else None,
            ("trainer.batch_size", trainer.batch_size),
            ("trainer.num_samples", trainer.num_samples),
        )
    )
    precision = StepPrecision(resolve_precision(trainer.precision, device), device)
    torch.manual_seed(
        trainer.seed
    )  # (threads and device tuning: PreparedRun.apply_process_settings)
    # images: the copy is read (its cache built the first time) before anything is trained
    images = data.load(trainer.progress) if isinstance(data, ImageData) else None
    model = build_model(config.model, data.dim, image_size(data)).to(device)
    objective = build_objective(
        config.objective, data, config.critic, trainer.grid_points, model=model
    ).to(device)
    optimizer = build_optimizer(
        [*model.parameters(), *objective.joint_parameters()],
        trainer.optimizer,
        trainer.lr_g or trainer.lr,
        trainer.betas,
    )
    critic_optimizer = (
        build_optimizer(
            objective.critic_parameters(),
            trainer.optimizer,
            trainer.lr_d or trainer.lr,
            trainer.betas_d or trainer.betas,
        )
        if objective.uses_critic
        else None
    )
    if trainer.compile:
        compiled = compile_networks(model, objective)
        log.info("trainer.compile: compiling %s", ", ".join(compiled) or "nothing (no networks)")
    seed = rank_seed(trainer.seed, current())  # (torchrun: each rank its own stream)
    splits: ToySplits | ImageSplits
    if isinstance(data, ImageData):
        assert images is not None
        splits = ImageSplits(images, device, data.on_device, seed)
    else:
        splits = ToySplits(data, n_train, config.dataset.n_test, config.dataset.seed).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    replicate(current(), (model, objective), optimizer, critic_optimizer)

    _warn_ignored(config, data)

    if state is not None:  # accepted: record the extended config in the run's own .hydra/
        if fallback is not None:
            log.warning("%s", fallback)
        if run.writes:
            run.remove_stale_temporaries()
        run.write_text(".hydra/config.yaml", OmegaConf.to_yaml(cfg))
        run.write_text(".hydra/overrides.yaml", OmegaConf.to_yaml(_job_overrides()))

    cache: dict[Any, Any] = {}
    extra = {"objective_divergence": objective.divergence} if objective.divergence else None

    exact = model.has_density and data.has_density
    # images: no ground truth exists (the loop logs losses only)
    measured = not isinstance(data, ImageData) and (
        exact or has_spread_metrics(data, model, objective.spread)
    )
    spread_cache: dict[Any, Any] = {}

    def evaluate(step: int) -> dict[str, float]:
        assert isinstance(data, ToyData)
        noise = eval_generator(trainer.seed, step, device)
        model.eval()
        metrics: dict[str, float] = {}
        if exact:  # (with spread noise the objective's divergence is between P̃ and Q̃)
            metrics = ground_truth_metrics(
                data,
                model,
                noise,
                points=trainer.grid_points,
                extra=extra if objective.spread is None else None,
                cache=cache,
            )
        metrics.update(
            spread_metrics(
                data,
                model,
                objective.spread_kernel,
                noise,
                trainer.grid_points,
                (),
                extra,
                spread_cache,
            )
        )
        model.train()
        return metrics

    if trainer.threads is not None:  # the searches below run at the run's own thread count
        torch.set_num_threads(trainer.threads)
    fresh_direct = state is None and isinstance(objective, Direct) and data.dim <= 2
    if fresh_direct and isinstance(objective, Direct) and isinstance(model, GaussianModel):
        log.info(objective.start(model))  # it starts where descent reaches the global optimum
    ideal = ideal_search(config, data, model, objective) if run.writes else "not written"
    figures = None
    if (data.dim <= 2 or isinstance(data, ImageData)) and run.writes:
        figures = run_figures(config, data, model, objective, device, ideal)
    file_logs = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    streams = consoles()
    return PreparedRun(
        task=RunTask(
            run,
            splits,
            model,
            objective,
            optimizer,
            critic_optimizer,
            generator,
            evaluate if measured and run.writes else None,
            plain,
            figures,
            state,
        ),
        config=config,
        device=device,
        precision=precision,
        data_dim=data.dim,
        images=isinstance(data, ImageData),
        resumed=state is not None,
        started=started,
        job_num=HydraConfig.get().job.num if multirun else None,
        log_file=file_logs[0].baseFilename if file_logs else None,
        log_format=file_logs[0].formatter if file_logs else None,
        console_format=streams[0].formatter if streams else None,
        ideal=ideal,
        mixture=data if isinstance(data, Mixture) else None,
    )


def _warn_ignored(config: C.TrainConfig, data: ToyData | ImageData) -> None:
    """A warning for the overrides this run does not read, one per reason."""
    objective = config.objective
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (
            ("critic", "trainer.lr_d", "trainer.betas_d", "trainer.critic_steps"),
            not OBJECTIVE_CLASSES[objective.name].uses_critic,
            f"objective={objective.name} trains no critic",
        ),
        (
            tuple(f"objective.{k}=" for k in NOISE_KEYS),
            getattr(objective, "noise", None) == "none",
            "objective.noise=none adds no instance noise; set objective.noise=gaussian or laplace",
        ),
        (
            ("objective.encoder_depth=",),
            isinstance(data, ImageData),
            "the convolutional encoder's depth follows dataset.size",
        ),
        (
            ("trainer.lr_end_factor=",),
            config.trainer.lr_schedule == "constant",
            "the rates are constant; set trainer.lr_schedule=linear or cosine to decay them",
        ),
    ]
    if isinstance(objective, C.MMDConfig):
        features, scale = mmd_settings(objective, data)
        rules.append(
            (
                tuple(f"objective.{k}=" for k in unused_mmd_keys(objective, data)),
                True,
                f"objective=mmd with features={features}, bandwidth_scale={scale} here",
            )
        )
    overrides = _job_overrides()
    keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    trainer = config.trainer
    if "trainer.lr" in keys and trainer.lr_d is not None and "trainer.lr_d" not in keys:
        log.warning(
            "trainer.lr=%g sets the model's learning rate only: objective=%s gives its critic its "
            "own, trainer.lr_d=%g (set trainer.lr_d too, or trainer.lr_d=null for one rate)",
            trainer.lr,
            objective.name,
            trainer.lr_d,
        )
    for prefixes, applies, why in rules:
        unused = [o for o in overrides if o.lstrip("+~").startswith(prefixes)]
        if applies and unused:
            log.warning("ignored: %s (%s)", " ".join(unused), why)
