"""Typed schemas for the composed Hydra config, and their validation.

This is the one boundary where the Hydra config is read: `validate_train_config` turns the
composed `DictConfig` into plain dataclasses, rejecting unknown keys (including ``+key=``
additions Hydra accepts silently), wrong types and out-of-range values with a `UserError`
naming the key and what is allowed. Each group option's YAML file carries a ``name`` that picks
its schema here. The schemas carry types and constraints only; default values live in the YAML
files under ``conf/`` so there is one place for each.

This module imports no torch, so the command line can answer ``--help`` quickly.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from gandiv.errors import UserError


def _spec(**constraints: Any) -> Any:
    """A required field (value from YAML) with constraints checked by `_check_constraints`."""
    return field(default=MISSING, metadata=constraints)


# The toy data are float32 samples, and their ground truth is computed on grids over their
# extent: a coordinate or a scale beyond this (a covariance entry beyond its square) would
# overflow or lose every digit (`build.build_dataset` checks the extent against the finest scale).
MAX_COORDINATE = 1e6
# Whole numbers are stored in 64-bit integers (checkpoints, tensors, the step counter).
MAX_INT = 2**63 - 1


# --------------------------------------------------------------------------------------------
# dataset/
@dataclass
class DatasetConfig:
    name: str = _spec()
    n_train: int | None = _spec(ge=1)
    n_test: int = _spec(ge=2)
    seed: int = _spec(ge=0)


@dataclass
class MixtureConfig(DatasetConfig):
    weights: list[float] = _spec()
    means: list[list[float]] = _spec(magnitude=MAX_COORDINATE)
    stds: list[float] | None = _spec(magnitude=MAX_COORDINATE)
    covs: list[list[list[float]]] | None = _spec(magnitude=MAX_COORDINATE**2)


@dataclass
class GaussianDataConfig(DatasetConfig):
    mean: list[float] = _spec(magnitude=MAX_COORDINATE)
    cov: list[list[float]] = _spec(magnitude=MAX_COORDINATE**2)


@dataclass
class SwissRollConfig(DatasetConfig):
    noise: float = _spec(gt=0.0, le=MAX_COORDINATE)
    scale: float = _spec(gt=0.0, le=MAX_COORDINATE)


@dataclass
class LineConfig(DatasetConfig):
    start: list[float] = _spec(magnitude=MAX_COORDINATE)
    end: list[float] = _spec(magnitude=MAX_COORDINATE)
    width: float = _spec(ge=0.0, le=MAX_COORDINATE)


@dataclass
class CircleConfig(DatasetConfig):
    center: list[float] = _spec(length=2, magnitude=MAX_COORDINATE)
    radius: float = _spec(gt=0.0, le=MAX_COORDINATE)
    width: float = _spec(ge=0.0, le=MAX_COORDINATE)


@dataclass
class ICAConfig(DatasetConfig):
    dim: int = _spec(ge=1, le=64)
    mixing: list[list[float]] | None = _spec(magnitude=MAX_COORDINATE)
    mixing_seed: int = _spec(ge=0)


@dataclass
class CelebAConfig:
    """CelebA from a local copy (no n_train/n_test/seed: the official partitions are used)."""

    name: str = _spec()
    root: str = _spec()
    crop: int = _spec(ge=1)
    size: int = _spec(ge=8, le=1024)  # a power of two (the DCGAN shapes), checked when built
    cache_dir: str | None = _spec()
    workers: int | None = _spec(ge=0)
    on_device: str = _spec(choices=("auto", "true", "false"))

    def __post_init__(self) -> None:
        # YAML reads true/false as booleans, which a str field receives as "True"/"False"
        self.on_device = str(self.on_device).lower()


DATASETS: dict[str, type] = {
    "gaussian": GaussianDataConfig,
    "mixture": MixtureConfig,
    "ring8": DatasetConfig,
    "grid25": DatasetConfig,
    "swiss_roll": SwissRollConfig,
    "line": LineConfig,
    "circle": CircleConfig,
    "ica": ICAConfig,
    "celeba": CelebAConfig,
}
IMAGE_DATASETS = ("celeba",)

# --------------------------------------------------------------------------------------------
# model/ and critic/
ACTIVATION_NAMES = ("relu", "leaky_relu", "elu", "tanh", "silu")


@dataclass
class GaussianModelConfig:
    name: str = _spec()
    init_std: float = _spec(gt=0.0)
    init_mean_std: float = _spec(ge=0.0)


@dataclass
class FlowConfig:
    name: str = _spec()
    depth: int = _spec(ge=1)
    width: int = _spec(ge=1)
    hidden_layers: int = _spec(ge=1)


@dataclass
class MLPGeneratorConfig:
    name: str = _spec()
    latent_dim: int = _spec(ge=1)
    width: int = _spec(ge=1)
    depth: int = _spec(ge=1)
    activation: str = _spec(choices=ACTIVATION_NAMES)


@dataclass
class MLPCriticConfig:
    name: str = _spec()
    width: int = _spec(ge=1)
    depth: int = _spec(ge=1)
    activation: str = _spec(choices=ACTIVATION_NAMES)
    spectral_norm: bool = _spec()
    ema: float = _spec(ge=0.0, lt=1.0)


@dataclass
class LinearGeneratorConfig:
    name: str = _spec()
    latent_dim: int = _spec(ge=1)
    prior: str = _spec(choices=("gaussian", "laplace"))


@dataclass
class DCGANGeneratorConfig:
    name: str = _spec()
    latent_dim: int = _spec(ge=1)
    width: int = _spec(ge=1)
    channels_last: bool = _spec()


@dataclass
class DCGANCriticConfig:
    name: str = _spec()
    width: int = _spec(ge=1)
    batch_norm: bool = _spec()
    spectral_norm: bool = _spec()
    channels_last: bool = _spec()
    ema: float = _spec(ge=0.0, lt=1.0)


MODELS: dict[str, type] = {
    "gaussian": GaussianModelConfig,
    "flow": FlowConfig,
    "mlp": MLPGeneratorConfig,
    "linear": LinearGeneratorConfig,
    "dcgan": DCGANGeneratorConfig,
}
CRITICS: dict[str, type] = {"mlp": MLPCriticConfig, "dcgan": DCGANCriticConfig}
# The options for images (the rest are for vectors: the toy datasets)
IMAGE_MODELS = ("dcgan",)
IMAGE_CRITICS = ("dcgan",)

# --------------------------------------------------------------------------------------------
# objective/


@dataclass
class ObjectiveConfig:
    name: str = _spec()


@dataclass
class DirectConfig(ObjectiveConfig):
    divergence: str = _spec()  # a row of gandiv.divergences, checked when it is built
    pi: float | None = _spec(gt=0.0, lt=1.0)


@dataclass
class GameConfig(ObjectiveConfig):
    """hinge; the keys every game with a critic has."""

    gradient_penalty: float = _spec(ge=0.0)
    # instance noise: the spread noise added to real and fake samples before the critic
    noise: str = _spec(choices=("none", "gaussian", "laplace"))
    sigma: float = _spec(gt=0.0)
    sigma_start: float | None = _spec(gt=0.0)
    anneal_steps: int = _spec(ge=0)
    samples: int = _spec(ge=1, le=1024)
    # PacGAN packing: the critic sees `packing` samples at once (trainer.batch_size divisible by it)
    packing: int = _spec(ge=1, le=64)


@dataclass
class AdversarialConfig(GameConfig):
    """ns_gan, logit_gan, reverse_kl_fgan: the divergence and model step are the name's."""

    # clip the critic so that the density ratio it implies stays within [e^−B, e^B] (null: off)
    log_ratio_bound: float | None = _spec(gt=0.0, le=700.0)


@dataclass
class FGANConfig(AdversarialConfig):
    divergence: str = _spec()  # a row of gandiv.divergences (js_pi has its own objective)
    generator: str = _spec(choices=("minimax", "nonsaturating"))
    allow_unstable: bool = _spec()  # train a row whose game is unstable in principle (kinked f)


@dataclass
class ClassifierConfig(AdversarialConfig):
    """gan: a classifier critic; the ratio step descends `divergence` through its logit."""

    generator: str = _spec(choices=("minimax", "ratio"))
    divergence: str | None = _spec()  # the ratio step's target: a row of gandiv.divergences


@dataclass
class JSPiConfig(ClassifierConfig):
    pi: float = _spec(gt=0.0, lt=1.0)
    generator: str = _spec(choices=("minimax", "nonsaturating", "ratio"))


# The least-squares game's codings (a, b, c): the fake and real targets of the critic and the
# model's target (Mao et al. 2017): `divergence` is their b − c = 1, b − a = 2 choice, `common`
# the 0/1/1 coding most code uses.
LSGAN_CODINGS: dict[str, tuple[float, float, float]] = {
    "divergence": (-1.0, 1.0, 0.0),
    "common": (0.0, 1.0, 1.0),
}


@dataclass
class LSGANConfig(GameConfig):
    coding: str = _spec(choices=tuple(LSGAN_CODINGS))
    generator: str = _spec(choices=("least_squares", "minimax"))


@dataclass
class MMDConfig(ObjectiveConfig):
    bandwidths: list[float] = _spec(gt=0.0)
    features: str = _spec(
        choices=("auto", "data", "random_conv")
    )  # random_conv on vectors: refused when built
    feature_width: int = _spec(ge=1)
    feature_seed: int = _spec(ge=0)
    bandwidth_scale: str = _spec(choices=("auto", "absolute", "median"))
    median_factors: list[float] = _spec(gt=0.0)


@dataclass
class SpreadConfig(ObjectiveConfig):
    noise: str = _spec(choices=("gaussian", "laplace"))
    sigma: float = _spec(gt=0.0)
    sigma_start: float | None = _spec(gt=0.0)
    anneal_steps: int = _spec(ge=0)
    samples: int = _spec(ge=1, le=1024)
    encoder_width: int | None = _spec(ge=1)
    encoder_depth: int = _spec(ge=1)
    iw_samples: int = _spec(ge=1, le=100_000)


OBJECTIVES: dict[str, type[ObjectiveConfig]] = {
    "forward_kl": ObjectiveConfig,
    "reverse_kl": ObjectiveConfig,
    "direct": DirectConfig,
    "gan": ClassifierConfig,
    "ns_gan": AdversarialConfig,
    "logit_gan": AdversarialConfig,
    "reverse_kl_fgan": AdversarialConfig,
    "fgan": FGANConfig,
    "js_pi": JSPiConfig,
    "lsgan": LSGANConfig,
    "hinge": GameConfig,
    "mmd": MMDConfig,
    "spread": SpreadConfig,
}

# --------------------------------------------------------------------------------------------
# trainer/
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adam", "sgd")
RATE_SCHEDULES = ("constant", "linear", "cosine")  # gandiv.training.loop.RateSchedule
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainerConfig:
    steps: int = _spec(ge=1)
    batch_size: int = _spec(ge=1)
    seed: int = _spec(ge=0)
    device: str = _spec(choices=DEVICES)
    threads: int | None = _spec(ge=1)
    optimizer: str = _spec(choices=OPTIMIZERS)
    lr: float = _spec(gt=0.0, le=1e3)
    lr_g: float | None = _spec(gt=0.0, le=1e3)
    lr_d: float | None = _spec(gt=0.0, le=1e3)
    betas: list[float] = _spec(length=2, ge=0.0, lt=1.0)
    betas_d: list[float] | None = _spec(length=2, ge=0.0, lt=1.0)
    lr_schedule: str = _spec(choices=RATE_SCHEDULES)
    lr_end_factor: float = _spec(ge=0.0, le=1.0)
    critic_steps: int = _spec(ge=1)
    log_every: int = _spec(ge=0)
    eval_every: int = _spec(ge=0)
    checkpoint_every: int = _spec(ge=0)
    grid_points: int | None = _spec(ge=16, le=4096)
    num_samples: int = _spec(ge=1, le=10_000_000)
    progress: bool = _spec()
    precision: str = _spec(choices=PRECISIONS)
    compile: bool = _spec()


# Keys that may change when a run is resumed: how long it trains, how often it logs,
# evaluates, saves and draws, and whether its networks are compiled (the same computation).
# Everything else must match the checkpoint's config.
RESUMABLE_KEYS = frozenset(
    {
        *(
            f"trainer.{k}"
            for k in ("steps", "log_every", "eval_every", "checkpoint_every", "progress", "compile")
        ),
        "trainer.num_samples",
        *(f"plot.{k}" for k in ("every", "figures_every", "samples", "grid")),
    }
)


@dataclass
class PlotConfig:
    every: int = _spec(ge=0)
    figures_every: int = _spec(ge=0)
    samples: int = _spec(ge=1, le=100_000)
    grid: int = _spec(ge=16, le=1000)


@dataclass
class TrainConfig:
    """The validated config of `gandiv train`."""

    dataset: Any
    model: Any
    objective: Any
    critic: Any
    trainer: TrainerConfig
    plot: PlotConfig
    resume: str | None


@dataclass
class EvalCriticConfig:
    divergences: list[str] = (
        _spec()
    )  # rows of gandiv.divergences or "wasserstein", checked when built
    # updates of each critic, on vectors and images alike: a whole number >= 1, or "auto"
    # (resolved by `gandiv.commands.evaluate`: from the data and the device); checked in
    # `validate_eval_config`
    steps: Any = field(default=MISSING)
    batch_size: int = _spec(ge=2)
    lr: float = _spec(gt=0.0, le=1e3)
    ema: float = _spec(ge=0.0, lt=1.0)
    gradient_penalty: float = _spec(ge=0.0)
    one_sided: bool = _spec()
    model_samples: int | None = _spec(ge=2)


@dataclass
class EvalImagesConfig:
    """What image runs use instead of eval.critic's batch_size and model_samples; the critic's
    steps, lr, ema and gradient_penalty are eval.critic's."""

    batch_size: int = _spec(ge=2)
    test_images: int | None = _spec(ge=4)
    nll_images: int = _spec(ge=1)
    grid: int = _spec(ge=1, le=256)


@dataclass
class EvalOptions:
    critic: EvalCriticConfig = field(default_factory=EvalCriticConfig)
    images: EvalImagesConfig = field(default_factory=EvalImagesConfig)
    pis: list[float] = _spec(gt=0.0, lt=1.0)
    num_samples: int = _spec(ge=100, le=1_000_000)
    kde_bandwidth: float | None = _spec(gt=0.0)
    grid_points: int | None = _spec(ge=16, le=4096)
    nearest: list[str] = _spec()  # rows of gandiv.divergences (js_pi: at each of `pis`)


@dataclass
class EvalConfig:
    """The validated config of `gandiv eval`."""

    run: str
    seed: int
    threads: int | None
    device: str
    critic: MLPCriticConfig | DCGANCriticConfig
    eval: EvalOptions


@dataclass
class _EvalTop:
    run: str = _spec()
    seed: int = _spec(ge=0)
    threads: int | None = _spec(ge=1)
    device: str = _spec(choices=DEVICES)


# --------------------------------------------------------------------------------------------
def _describe(bound: str, value: float) -> str:
    return {"ge": f">= {value}", "gt": f"> {value}", "le": f"<= {value}", "lt": f"< {value}"}[bound]


def _check_value(key: str, value: Any, constraints: dict[str, Any]) -> None:
    if value is None:
        return
    if isinstance(value, list):
        length = constraints.get("length")
        if length is not None and len(value) != length:
            raise UserError(key, f"must be a list of {length} numbers, got {value}")
        if not value:
            raise UserError(key, "must not be an empty list")
        for item in value:
            _check_value(key, item, {k: v for k, v in constraints.items() if k != "length"})
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(key, f"must be a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise UserError(key, f"must fit a 64-bit integer (at most {MAX_INT}), got {value}")
    magnitude = constraints.get("magnitude")
    if magnitude is not None and isinstance(value, int | float) and abs(value) > magnitude:
        raise UserError(
            key,
            f"must be within ±{magnitude:g} (the data are float32 samples, their ground truth "
            f"is computed on grids over their extent), got {value:g}",
        )
    if "choices" in constraints and value not in constraints["choices"]:
        allowed = ", ".join(constraints["choices"])
        raise UserError(key, f"'{value}' is not allowed; choose one of: {allowed}")
    compare = {
        "ge": lambda a, b: a >= b,
        "gt": lambda a, b: a > b,
        "le": lambda a, b: a <= b,
        "lt": lambda a, b: a < b,
    }
    bounds = [b for b in ("ge", "gt", "le", "lt") if b in constraints]
    if any(not compare[b](value, constraints[b]) for b in bounds):
        allowed = " and ".join(_describe(b, constraints[b]) for b in bounds)
        raise UserError(key, f"must be {allowed}, got {value}")


def _check_constraints(prefix: str, obj: Any) -> None:
    for f in dataclasses.fields(obj):
        _check_value(f"{prefix}{f.name}", getattr(obj, f.name), dict(f.metadata))


def _as_floats(value: Any) -> Any:
    """Integers written where numbers are expected (``[[-1], [1]]``) become floats."""
    if isinstance(value, list):
        return [_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# Keys that were removed, and what to write instead (the command line's message for each).
REMOVED_KEYS: dict[str, str] = {
    "eval.images.steps": (
        "removed; the independent critic's updates are eval.critic.steps on image runs too "
        "(auto: 1000 on CUDA, fewer on the CPU), e.g. eval.critic.steps=200"
    ),
}


def removed_key(key: str) -> str | None:
    """The message for a removed key (`REMOVED_KEYS`), with or without Hydra's + prefix."""
    return REMOVED_KEYS.get(key.removeprefix("+").removeprefix("++"))


def _check_keys(prefix: str, node: DictConfig, schema: type) -> None:
    """Unknown keys, at any depth of nested schemas, named with their dotted path."""
    hints = typing.get_type_hints(schema)
    allowed = [f.name for f in dataclasses.fields(schema)]
    dot = f"{prefix}." if prefix else ""
    for key in map(str, node):
        gone = removed_key(f"{dot}{key}")
        if gone:
            raise UserError(f"{dot}{key}", gone)
        if key not in allowed:
            where = f"{prefix}" if prefix else "this command"
            raise UserError(f"{dot}{key}", f"unknown key; {where} accepts: {', '.join(allowed)}")
        if OmegaConf.is_missing(node, key):  # ??? (reported as required by `to_schema`)
            continue
        child = node[key]
        if dataclasses.is_dataclass(hints[key]) and isinstance(child, DictConfig):
            _check_keys(f"{dot}{key}", child, hints[key])


_KINDS = {"int": "whole number", "float": "number", "str": "name", "bool": "true or false"}


def _check_shape(key: str, value: Any, annotation: str, item: bool = False) -> None:
    """A list where one value is expected, or one value where a list is, at any depth of
    nesting (OmegaConf's own messages for these name its node classes, not what to write)."""
    annotation = annotation.removesuffix(" | None")
    if value is None or (annotation not in _KINDS and not annotation.startswith("list[")):
        return
    what = "each item " if item else ""
    if annotation.startswith("list["):
        if not isinstance(value, list):
            raise UserError(key, f"{what}must be a list in brackets [...], got {value!r}")
        for child in value:
            _check_shape(key, child, annotation[len("list[") : -1], item=True)
    elif isinstance(value, list | dict):
        raise UserError(key, f"{what}must be a single {_KINDS[annotation]}, got {value!r}")


def to_schema(prefix: str, node: Any, schema: type) -> Any:
    """Merge a config node into `schema` and return the checked dataclass instance.

    `prefix` is the node's dotted path (``"trainer"``), used in messages.
    """
    if not isinstance(node, DictConfig):
        raise UserError(prefix, f"must be a mapping of keys to values, got {node!r}")
    dot = f"{prefix}." if prefix else ""
    _check_keys(prefix, node, schema)
    plain = OmegaConf.to_container(node, resolve=True)
    assert isinstance(plain, dict)
    for f in dataclasses.fields(schema):
        if "float" in str(f.type) and "list" in str(f.type) and f.name in plain:
            plain[f.name] = _as_floats(plain[f.name])
        _check_shape(f"{dot}{f.name}", plain.get(f.name), str(f.type))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise UserError(f"{dot}{missing[0]}", "is required but has no value")
        obj = OmegaConf.to_object(merged)
    except ConfigKeyError as err:  # pragma: no cover - unknown keys are caught above
        raise UserError(prefix, str(err).splitlines()[0]) from None
    except OmegaConfBaseException as err:
        full_key = getattr(err, "full_key", None)
        key = dot + str(full_key) if full_key else prefix
        raise UserError(key, str(err).splitlines()[0]) from None
    _check_constraints(dot, obj)
    return obj


def _group(cfg: DictConfig, group: str, options: dict[str, type]) -> Any:
    node = cfg.get(group)
    if not isinstance(node, DictConfig) or "name" not in node:
        allowed = ", ".join(sorted(options))
        raise UserError(group, f"no option selected; choose one with {group}=NAME ({allowed})")
    name = node.name
    if name not in options:
        allowed = ", ".join(sorted(options))
        raise UserError(f"{group}.name", f"'{name}' is not one of: {allowed}")
    return to_schema(group, node, options[name])


_TOP_KEYS = ("dataset", "model", "objective", "critic", "trainer", "plot", "resume")


def validate_train_config(cfg: DictConfig) -> TrainConfig:
    """Check a composed `gandiv train` config and return it as typed dataclasses."""
    for key in cfg:
        if key not in _TOP_KEYS:
            raise UserError(str(key), f"unknown key; the train config has: {', '.join(_TOP_KEYS)}")
    resume = cfg.get("resume")
    if resume is not None and not isinstance(resume, str):
        raise UserError("resume", f"must be a run directory path, got {resume!r}")
    objective = _group(cfg, "objective", OBJECTIVES)
    if isinstance(objective, DirectConfig):
        if objective.divergence == "js_pi" and objective.pi is None:
            raise UserError("objective.pi", "divergence=js_pi needs objective.pi in (0, 1)")
        if objective.divergence != "js_pi" and objective.pi is not None:
            raise UserError(
                "objective.pi", "only applies to objective.divergence=js_pi; remove it or set that"
            )
    config = TrainConfig(
        dataset=_group(cfg, "dataset", DATASETS),
        model=_group(cfg, "model", MODELS),
        objective=objective,
        critic=_group(cfg, "critic", CRITICS),
        trainer=to_schema("trainer", cfg.get("trainer"), TrainerConfig),
        plot=to_schema("plot", cfg.get("plot"), PlotConfig),
        resume=resume,
    )
    if isinstance(objective, GameConfig) and config.trainer.batch_size % objective.packing:
        raise UserError(
            "objective.packing",
            f"{objective.packing} must divide trainer.batch_size={config.trainer.batch_size}"
            " (the critic sees the batch in packs of objective.packing samples)",
        )
    return config


# Keys added after runs were saved without them, and the value that reproduces how such a run
# trained (filled in when an older run is read for eval, plot or resume): per objective, those
# its options have; every trainer has the trainer's.
ADDED_OBJECTIVE_KEYS: dict[str, Any] = {
    "log_ratio_bound": None,
    "allow_unstable": True,
    "generator": "minimax",  # gan's (js_pi and fgan always had theirs)
    "divergence": None,  # gan's and js_pi's ratio target (fgan and direct always had theirs)
    "packing": 1,  # every game with a critic
}
# (lr_end_factor does nothing at constant rates: the shipped value, so a resume compares equal)
ADDED_TRAINER_KEYS: dict[str, Any] = {"lr_schedule": "constant", "lr_end_factor": 0.1}


def with_added_keys(config: Any) -> Any:
    """`config` (a run's saved train config: a DictConfig or a plain dict) with the keys added
    since it was saved filled in, in place, as the run trained; returned for convenience."""
    node = config.get("objective")
    if isinstance(node, dict | DictConfig) and node.get("name") in OBJECTIVES:
        known = {f.name for f in dataclasses.fields(OBJECTIVES[node["name"]])}
        for key, value in ADDED_OBJECTIVE_KEYS.items():
            if key in known and key not in node:
                node[key] = value
    trainer = config.get("trainer")
    if isinstance(trainer, dict | DictConfig):
        for key, value in ADDED_TRAINER_KEYS.items():
            if key not in trainer:
                trainer[key] = value
    return config


def load_train_config(path: Path) -> TrainConfig:
    """The validated config a run saved in its ``.hydra/config.yaml`` (`path`); keys added since
    it was saved take the values under which it trained (`with_added_keys`)."""
    try:
        saved = OmegaConf.load(path)
    except Exception as err:
        first = next((line for line in str(err).splitlines() if line.strip()), repr(err))
        raise UserError(str(path), f"unreadable ({first.strip()})") from None
    if not isinstance(saved, DictConfig):
        raise UserError(str(path), "not a gandiv train config")
    try:
        return validate_train_config(with_added_keys(saved))
    except UserError as err:
        raise UserError(str(path), f"not a valid gandiv train config ({err})") from None


def _check_critic_steps(steps: Any) -> None:
    """eval.critic.steps: a whole number >= 1, or auto."""
    if steps == "auto":
        return
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise UserError("eval.critic.steps", f"must be a whole number >= 1 or auto, got {steps!r}")
    _check_value("eval.critic.steps", steps, {"ge": 1})


def validate_eval_config(cfg: DictConfig) -> EvalConfig:
    """Check a composed `gandiv eval` config."""
    for key in cfg:
        if key not in ("run", "seed", "threads", "device", "critic", "eval"):
            raise UserError(
                str(key),
                "unknown key; the eval config has: run, seed, threads, device, critic, eval",
            )
    top = to_schema("", OmegaConf.masked_copy(cfg, ["run", "seed", "threads", "device"]), _EvalTop)
    critic = _group(cfg, "critic", CRITICS)
    if critic.ema != 0:
        raise UserError(
            "critic.ema", "applies to training; the evaluation critic averages with eval.critic.ema"
        )
    options = to_schema("eval", cfg.get("eval"), EvalOptions)
    _check_constraints("eval.critic.", options.critic)
    _check_critic_steps(options.critic.steps)
    _check_constraints("eval.images.", options.images)
    return EvalConfig(
        run=top.run,
        seed=top.seed,
        threads=top.threads,
        device=top.device,
        critic=critic,
        eval=options,
    )
