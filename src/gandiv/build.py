"""Builds data, models and objectives from the validated config (the config stops here).

Everything below this module takes plain arguments. Mathematical validity (mixture weights,
positive-definite covariances, a flow's dimension) is checked by the constructors themselves;
their `ValueError`s are reported here as `UserError`s naming the config group at fault, and
combinations that cannot work (maximum likelihood on a model without a density, ...) are refused
before anything is trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from gandiv import config as C
from gandiv.data.images import ImageData
from gandiv.data.manifold import ICA, Circle, Line, random_mixing
from gandiv.data.spread import SpreadNoise
from gandiv.data.toy import Mixture, SwissRoll, ToyData, gaussian, grid25, ring8
from gandiv.divergences import DIVERGENCES, FDivergence, get_divergence
from gandiv.errors import UserError
from gandiv.models import CouplingFlow, GaussianModel, LinearGenerator, MLPCritic, MLPGenerator
from gandiv.models.base import GenerativeModel, LatentGenerator
from gandiv.models.dcgan import DCGANCritic, DCGANFeatures, DCGANGenerator
from gandiv.objectives.adversarial import Hinge, LeastSquares, VariationalDivergence
from gandiv.objectives.base import Objective
from gandiv.objectives.likelihood import Direct, ForwardKL, ReverseKL
from gandiv.objectives.mmd import MMD
from gandiv.objectives.spread import MLP_ENCODER_WIDTH, SpreadKL

T = TypeVar("T")

MODEL_CLASSES: dict[str, type[GenerativeModel]] = {
    "gaussian": GaussianModel,
    "flow": CouplingFlow,
    "mlp": MLPGenerator,
    "linear": LinearGenerator,
    "dcgan": DCGANGenerator,
}
OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    "forward_kl": ForwardKL,
    "reverse_kl": ReverseKL,
    "direct": Direct,
    "mmd": MMD,
    "spread": SpreadKL,
    **dict.fromkeys(
        ("gan", "ns_gan", "logit_gan", "reverse_kl_fgan", "fgan", "js_pi"), VariationalDivergence
    ),
    "lsgan": LeastSquares,
    "hinge": Hinge,
}
# The adversarial presets: (the critic's row, the model step, the divergence that step minimises
# with an optimal critic when it is not the row's own: Huszár's logit step minimises KL(Q‖P); no
# divergence is known for the non-saturating step).
ADVERSARIAL_PRESETS: dict[str, tuple[str, str, str | None]] = {
    "ns_gan": ("gan", "nonsaturating", None),
    "logit_gan": ("gan", "logit", "reverse_kl"),
    "reverse_kl_fgan": ("reverse_kl", "minimax", None),
}


def _checked(group: str, make: Callable[[], T]) -> T:
    try:
        return make()
    except ValueError as err:
        raise UserError(group, str(err)) from None


# The finest scale of toy data against their extent: beyond this float32 samples and the ground
# truth's grids cannot resolve the distribution (see `config.MAX_COORDINATE`).
MAX_EXTENT_RATIO = 1e5


def build_dataset(cfg: Any) -> ToyData | ImageData:
    """The toy distribution named by ``dataset.name``, or an image dataset (read when loaded);
    toy data whose finest scale float32 cannot resolve against their extent are refused."""
    data = _dataset(cfg)
    if isinstance(data, ImageData):
        return data
    box = data.bounds()
    extent = float((box[:, 1] - box[:, 0]).max())
    scale = data.length_scale()
    if not (math.isfinite(extent) and math.isfinite(scale) and scale > 0):
        raise UserError(
            "dataset",
            f"its extent ({extent:g}) or finest scale ({scale:g}) is not a "
            "positive finite number; choose smaller coordinates and scales",
        )
    if extent / scale > MAX_EXTENT_RATIO:
        raise UserError(
            "dataset",
            f"its finest scale ({scale:.3g}) is below 1/{MAX_EXTENT_RATIO:g} of its extent "
            f"({extent:.3g}): float32 samples and the ground truth's grids cannot resolve it; "
            "widen its narrowest component or bring its parts closer",
        )
    return data


def _dataset(cfg: Any) -> ToyData | ImageData:
    if isinstance(cfg, C.CelebAConfig):
        if cfg.size & (cfg.size - 1):
            raise UserError(
                "dataset.size", f"must be a power of two (the DCGAN shapes), got {cfg.size}"
            )
        on_device: Literal["auto"] | bool = (
            "auto" if cfg.on_device == "auto" else (cfg.on_device == "true")
        )
        return ImageData(
            cfg.name, cfg.root, cfg.crop, cfg.size, cfg.cache_dir, cfg.workers, on_device
        )
    if isinstance(cfg, C.MixtureConfig):
        if (cfg.stds is None) == (cfg.covs is None):
            raise UserError(
                "dataset", "give exactly one of dataset.stds (isotropic) or dataset.covs (full)"
            )
        if cfg.stds is not None:
            stds = cfg.stds
            return _checked("dataset", lambda: Mixture.isotropic(cfg.weights, cfg.means, stds))
        covs = cfg.covs
        assert covs is not None
        return _checked("dataset", lambda: Mixture(cfg.weights, cfg.means, covs))
    if isinstance(cfg, C.GaussianDataConfig):
        return _checked("dataset", lambda: gaussian(cfg.mean, cfg.cov))
    if isinstance(cfg, C.SwissRollConfig):
        return _checked("dataset", lambda: SwissRoll(noise=cfg.noise, scale=cfg.scale))
    if isinstance(cfg, C.LineConfig):
        return _checked("dataset", lambda: Line(cfg.start, cfg.end, cfg.width))
    if isinstance(cfg, C.CircleConfig):
        return _checked("dataset", lambda: Circle(cfg.center, cfg.radius, cfg.width))
    if isinstance(cfg, C.ICAConfig):
        if cfg.mixing is None:
            return ICA(random_mixing(cfg.dim, cfg.mixing_seed))
        if len(cfg.mixing) != cfg.dim:
            raise UserError(
                "dataset.mixing", f"must be a {cfg.dim} × {cfg.dim} matrix (dataset.dim={cfg.dim})"
            )
        mixing = cfg.mixing
        return _checked("dataset.mixing", lambda: ICA(mixing))
    named: dict[str, Callable[[], ToyData]] = {"ring8": ring8, "grid25": grid25}
    return named[cfg.name]()


def build_model(cfg: Any, dim: int, image_size: int | None = None) -> GenerativeModel:
    """The generative model named by ``model.name`` for data of dimension `dim` (images:
    `image_size` × `image_size` RGB)."""
    if isinstance(cfg, C.DCGANGeneratorConfig):
        assert image_size is not None, "model=dcgan needs image data"
        return _checked(
            "model",
            lambda: DCGANGenerator(cfg.latent_dim, cfg.width, image_size, 3, cfg.channels_last),
        )
    if isinstance(cfg, C.GaussianModelConfig):
        return _checked("model", lambda: GaussianModel(dim, cfg.init_std, cfg.init_mean_std))
    if isinstance(cfg, C.FlowConfig):
        return _checked("model", lambda: CouplingFlow(dim, cfg.depth, cfg.width, cfg.hidden_layers))
    if isinstance(cfg, C.MLPGeneratorConfig):
        return _checked(
            "model",
            lambda: MLPGenerator(dim, cfg.latent_dim, cfg.width, cfg.depth, cfg.activation),
        )
    if isinstance(cfg, C.LinearGeneratorConfig):
        return _checked("model", lambda: LinearGenerator(dim, cfg.latent_dim, cfg.prior))
    raise AssertionError(f"no builder for model {cfg.name}")  # pragma: no cover


def build_critic(
    cfg: C.MLPCriticConfig | C.DCGANCriticConfig,
    dim: int,
    image_size: int | None = None,
    packing: int = 1,
) -> nn.Module:
    """The critic named by ``critic.name`` (used by adversarial objectives and evaluation); the
    DCGAN critic is for `image_size` × `image_size` RGB images. With `packing` m it sees m
    samples at once: m·dim inputs (vectors), or 3m channels (images, packed along channels)."""
    if isinstance(cfg, C.DCGANCriticConfig):
        assert image_size is not None, "critic=dcgan needs image data"
        return _checked(
            "critic",
            lambda: DCGANCritic(
                cfg.width,
                image_size,
                3 * packing,
                cfg.batch_norm,
                cfg.spectral_norm,
                cfg.channels_last,
            ),
        )
    return _checked(
        "critic",
        lambda: MLPCritic(packing * dim, cfg.width, cfg.depth, cfg.activation, cfg.spectral_norm),
    )


def check_images(objective: Any, model: Any, data: ToyData | ImageData, critic: Any) -> None:
    """Refuse image models and critics on vector data, vector ones on images, and objectives
    that images cannot have (they need densities)."""
    cls = OBJECTIVE_CLASSES[objective.name]
    images = isinstance(data, ImageData)
    kind = f"dataset={data.name}" if isinstance(data, ImageData) else "vector (toy) data"
    if images and (cls.needs_model_density or cls.needs_data_density):
        raise UserError(
            "objective",
            f"objective={objective.name} needs densities, which {kind} images do not have; use "
            "a sample-based objective (gan, ns_gan, logit_gan, reverse_kl_fgan, fgan, js_pi, "
            "mmd) or spread",
        )
    if images != (model.name in C.IMAGE_MODELS):
        allowed = C.IMAGE_MODELS if images else sorted(set(C.MODELS) - set(C.IMAGE_MODELS))
        raise UserError(
            "model",
            f"model={model.name} {'is for vectors' if images else 'generates images'}, not "
            f"{kind}; use model= one of: {', '.join(allowed)}",
        )
    if cls.uses_critic and critic is not None and images != (critic.name in C.IMAGE_CRITICS):
        allowed = C.IMAGE_CRITICS if images else sorted(set(C.CRITICS) - set(C.IMAGE_CRITICS))
        raise UserError(
            "critic",
            f"critic={critic.name} {'is for vectors' if images else 'is for images'}, not "
            f"{kind}; use critic= one of: {', '.join(allowed)}",
        )


def check_combination(
    objective: Any,
    model: Any,
    data: ToyData | ImageData,
    batch_size: int = 2,
    critic: Any = None,
) -> None:
    """Refuse objective/model/data combinations that cannot work, before any training."""
    check_images(objective, model, data, critic)
    cls = OBJECTIVE_CLASSES[objective.name]
    if (cls.needs_model_density or cls.needs_data_density) and data.degenerate:
        raise UserError(
            "objective",
            f"{objective.name} is undefined on this dataset: its points lie on a curve of zero "
            "width, where no density exists (the likelihood of a model with a density is "
            "unbounded there); use objective=spread, a sample-based objective, or a width > 0 "
            "(dataset.width)",
        )
    if cls.needs_generator and not issubclass(MODEL_CLASSES[model.name], LatentGenerator):
        generators = ", ".join(
            name
            for name, c in MODEL_CLASSES.items()
            if issubclass(c, LatentGenerator)
            and (name in C.IMAGE_MODELS) == isinstance(data, ImageData)
        )
        raise UserError(
            "model",
            f"objective={objective.name} trains a deterministic generator x = G(z) with an "
            f"encoder, but model={model.name} is not one; use model= one of: {generators}",
        )
    if cls.needs_model_density and not MODEL_CLASSES[model.name].has_density:
        raise UserError(
            "objective",
            f"{objective.name} needs a model with a density, but model={model.name} is an "
            "implicit generator (samples only); use model=gaussian or model=flow",
        )
    if cls.needs_data_density and not data.has_density:
        raise UserError(
            "objective",
            f"{objective.name} needs the data's density, which is unknown for this dataset; "
            "use objective=forward_kl or a sample-based objective",
        )
    if isinstance(objective, C.MMDConfig) and batch_size < 2:
        raise UserError("trainer.batch_size", "objective=mmd needs at least 2 samples per batch")
    mmd = isinstance(objective, C.MMDConfig)
    if mmd and objective.features == "random_conv" and not isinstance(data, ImageData):
        raise UserError(
            "objective.features",
            "random_conv is a convolutional feature map for images, not vector (toy) data; "
            "use objective.features=auto or data",
        )


def _spread_noise(cfg: Any) -> SpreadNoise:
    if cfg.sigma_start is not None and cfg.anneal_steps == 0:
        raise UserError(
            "objective.anneal_steps", "must be ≥ 1 to anneal sigma from objective.sigma_start"
        )
    if cfg.sigma_start is None and cfg.anneal_steps > 0:
        raise UserError(
            "objective.sigma_start",
            "is needed to anneal (the sigma to start from), or set objective.anneal_steps=0",
        )
    return SpreadNoise(cfg.noise, cfg.sigma, cfg.sigma_start, cfg.anneal_steps)


def _ratio_target(cfg: C.ClassifierConfig) -> FDivergence | None:
    """The row the ratio step descends (`objective.divergence`); the other steps take none."""
    allowed = [name for name, row in DIVERGENCES.items() if not row.kinked]
    if cfg.generator != "ratio":
        if cfg.divergence is not None:
            raise UserError(
                "objective.divergence",
                "only applies to objective.generator=ratio (the step that descends a chosen"
                " divergence through the critic's log ratio); remove it or set that",
            )
        return None
    if cfg.divergence is None:
        raise UserError(
            "objective.divergence",
            "objective.generator=ratio needs the divergence to descend: one of"
            f" {', '.join(allowed)}",
        )
    if cfg.divergence not in allowed:
        why = (
            " (total variation's first variation is a step: no gradient almost everywhere)"
            if cfg.divergence in DIVERGENCES
            else ""
        )
        raise UserError(
            "objective.divergence", f"'{cfg.divergence}' is not one of: {', '.join(allowed)}{why}"
        )
    return DIVERGENCES[cfg.divergence]


def build_objective(
    cfg: Any,
    data: ToyData | ImageData,
    critic: C.MLPCriticConfig | C.DCGANCriticConfig,
    grid_points: int | None,
    model: GenerativeModel | None = None,
) -> Objective:
    """The objective named by ``objective.name`` (with its critic, for adversarial ones, and its
    encoder for `spread`, which needs the built `model`)."""
    image_size = data.size if isinstance(data, ImageData) else None
    if isinstance(cfg, C.SpreadConfig):
        assert isinstance(model, LatentGenerator), "check_combination admits generators only"
        if isinstance(model, DCGANGenerator):  # a convolutional encoder as wide as the generator
            shape: tuple[int, int, int] | None = model.image_shape
            width, channels_last = cfg.encoder_width or model.width, model.channels_last
        else:
            shape, width, channels_last = None, cfg.encoder_width or MLP_ENCODER_WIDTH, False
        return _checked(
            "objective",
            lambda: SpreadKL(
                _spread_noise(cfg),
                data.dim,
                model.latent_dim,
                cfg.samples,
                width,
                cfg.encoder_depth,
                cfg.iw_samples,
                shape,
                channels_last,
            ),
        )
    if cfg.name == "forward_kl":
        return ForwardKL()
    if cfg.name == "reverse_kl":
        assert isinstance(data, ToyData)
        return ReverseKL(data)
    if isinstance(cfg, C.DirectConfig):
        assert isinstance(data, ToyData)
        row = _checked("objective.divergence", lambda: get_divergence(cfg.divergence, cfg.pi))
        return Direct(data, row, grid_points)
    if isinstance(cfg, C.MMDConfig):
        return _mmd(cfg, data, model)
    # every game with a critic: its network and the options its config group shares
    critic_net = build_critic(critic, data.dim, image_size, cfg.packing)
    game = {
        "gradient_penalty": cfg.gradient_penalty,
        "critic_ema": critic.ema,
        "spread": _spread_noise(cfg) if cfg.noise != "none" else None,
        "spread_samples": cfg.samples,
        "packing": cfg.packing,
    }
    if isinstance(cfg, C.LSGANConfig):
        coding = C.LSGAN_CODINGS[cfg.coding]
        return _checked(
            "objective", lambda: LeastSquares(cfg.name, critic_net, coding, cfg.generator, **game)
        )
    if not isinstance(cfg, C.AdversarialConfig):  # hinge
        return Hinge(cfg.name, critic_net, **game)
    target = None
    if isinstance(cfg, C.FGANConfig):
        if cfg.divergence == "js_pi":
            raise UserError(
                "objective.divergence", "for JS_π use objective=js_pi objective.pi=VALUE"
            )
        if cfg.divergence not in DIVERGENCES:
            allowed = ", ".join(DIVERGENCES)
            raise UserError("objective.divergence", f"'{cfg.divergence}' is not one of: {allowed}")
        row, step = DIVERGENCES[cfg.divergence], cfg.generator
        if row.kinked and not cfg.allow_unstable:
            raise UserError(
                "objective.divergence",
                f"the f-GAN game of {row.name} is unstable in principle: f has a kink at 1, so"
                " the optimal critic is a step (½·sign(p − q)) and gives the model no gradient"
                " almost everywhere (its fits diverge); for its ideal use objective=direct"
                f" objective.divergence={row.name}, or set objective.allow_unstable=true to"
                " train the game anyway (run health then reports what happened)",
            )
    elif isinstance(cfg, C.JSPiConfig):
        row, step = get_divergence("js_pi", cfg.pi), cfg.generator
    elif isinstance(cfg, C.ClassifierConfig):
        row, step = get_divergence("gan"), cfg.generator
    else:
        name, step, target_name = ADVERSARIAL_PRESETS[cfg.name]
        row = get_divergence(name)
        target = get_divergence(target_name) if target_name else None
    return VariationalDivergence(
        cfg.name,
        critic_net,
        row,
        step,
        target=target,
        log_ratio_bound=cfg.log_ratio_bound,
        ratio_target=_ratio_target(cfg) if isinstance(cfg, C.ClassifierConfig) else None,
        **game,
    )


def mmd_settings(cfg: C.MMDConfig, data: ToyData | ImageData) -> tuple[str, str]:
    """`objective.features` and `objective.bandwidth_scale` with `auto` resolved: kernels on the
    data with absolute bandwidths on vectors, on random convolutional features with the median
    heuristic on images."""
    images = isinstance(data, ImageData)
    features = cfg.features if cfg.features != "auto" else ("random_conv" if images else "data")
    scale = cfg.bandwidth_scale
    if scale == "auto":
        scale = "median" if images else "absolute"
    return features, scale


def unused_mmd_keys(cfg: C.MMDConfig, data: ToyData | ImageData) -> list[str]:
    """The `objective.*` keys these mmd settings do not read."""
    features, scale = mmd_settings(cfg, data)
    unused = ["median_factors"] if scale == "absolute" else ["bandwidths"]
    if features != "random_conv":
        unused += ["feature_width", "feature_seed"]
    return unused


def _mmd(cfg: C.MMDConfig, data: ToyData | ImageData, model: GenerativeModel | None) -> MMD:
    """MMD with its `auto` settings resolved (`mmd_settings`)."""
    features, scale = mmd_settings(cfg, data)
    feature_map = None
    if features == "random_conv":
        assert isinstance(data, ImageData), "check_combination admits random_conv on images only"
        channels_last = bool(getattr(model, "channels_last", False))  # the generator's layout
        feature_map = _checked(
            "objective",
            lambda: DCGANFeatures(cfg.feature_width, data.size, 3, cfg.feature_seed, channels_last),
        )
    median = scale == "median"
    return MMD(cfg.median_factors if median else cfg.bandwidths, feature_map, median_scale=median)


def build_optimizer(
    params: Iterable[nn.Parameter], name: str, lr: float, betas: Sequence[float]
) -> torch.optim.Optimizer:
    """Adam with `betas`, or SGD with momentum `betas[0]`.

    Adam runs fused (one kernel per step for all parameters instead of about eight operators per
    parameter tensor: some 7% more GAN steps/s at width 128, batch 256 on the CPU; see
    benchmarks/README.md) wherever torch has that kernel: floating-point parameters on the CPU or
    a CUDA device.
    """
    params = list(params)
    if name == "adam":
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(params, lr=lr, betas=(betas[0], betas[1]), fused=fused or None)
    return torch.optim.SGD(params, lr=lr, momentum=betas[0])


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(key, "cuda requested but no CUDA device is available; use auto or cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# Memory: what a run's networks, batches and samples take, estimated from its config before any
# of them is allocated (`gandiv.commands.runs.check_memory` compares it with what is available).
FLOAT_BYTES = 4
# Each parameter: itself, its gradient and the optimiser's two moments (plus an average's copy).
PARAMETER_COPIES = 5
# Each hidden unit of a batch: its pre-activation, activation and their gradients, for the real
# and the generated batch.
ACTIVATION_COPIES = 8


def _mlp_parameters(inputs: int, width: int, depth: int, outputs: int) -> int:
    return (inputs + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * outputs


def memory_needs(
    config: C.TrainConfig,
    dim: int,
    critic: C.MLPCriticConfig | C.DCGANCriticConfig | None,
    batch_size: tuple[str, int],
    samples: tuple[str, int],
) -> dict[str, tuple[int, str]]:
    """Bytes a vector run needs, by the config key that drives them, with what they are: the
    networks' parameters and optimiser state, a batch's hidden units, the data and the samples.
    `critic` is the critic trained (None: none), `batch_size` and `samples` the keys and values
    of the batch and of the largest set of samples drawn at once. Image runs (sized by their
    DCGAN shapes) give {}."""
    model, objective = config.model, config.objective
    if isinstance(model, C.DCGANGeneratorConfig) or isinstance(critic, C.DCGANCriticConfig):
        return {}
    needs: dict[str, tuple[int, str]] = {}
    batch_key, batch = batch_size

    def add(key: str, value: int, parameters: int, units: int, depth: tuple[str, int]) -> None:
        bytes_ = FLOAT_BYTES * (PARAMETER_COPIES * parameters + ACTIVATION_COPIES * batch * units)
        network = f"{key}={value}, {depth[0]}={depth[1]}"
        needs[key] = (bytes_, f"{network} with {batch_key}={batch}")

    if isinstance(model, C.FlowConfig):
        layers = model.hidden_layers
        add(
            "model.width",
            model.width,
            model.depth * 2 * _mlp_parameters(dim, model.width, layers, dim),
            model.depth * 2 * model.width * layers,
            ("model.depth", model.depth),
        )
    elif isinstance(model, C.MLPGeneratorConfig):
        add(
            "model.width",
            model.width,
            _mlp_parameters(model.latent_dim, model.width, model.depth, dim),
            model.width * model.depth,
            ("model.depth", model.depth),
        )
    if isinstance(critic, C.MLPCriticConfig):
        draws = (
            getattr(objective, "samples", 1) if getattr(objective, "noise", "none") != "none" else 1
        )
        add(
            "critic.width",
            critic.width,
            # (packing m: m·dim inputs; its n/m rows are counted as n, an over-estimate)
            _mlp_parameters(getattr(objective, "packing", 1) * dim, critic.width, critic.depth, 1),
            critic.width * critic.depth * draws,
            ("critic.depth", critic.depth),
        )
    if isinstance(objective, C.SpreadConfig) and objective.encoder_width is not None:
        add(
            "objective.encoder_width",
            objective.encoder_width,
            _mlp_parameters(dim, objective.encoder_width, objective.encoder_depth, 2 * dim),
            objective.encoder_width * objective.encoder_depth * objective.samples,
            ("objective.encoder_depth", objective.encoder_depth),
        )
    if isinstance(objective, C.MMDConfig):
        kernels = len(objective.bandwidths) * len(objective.median_factors) + 3
        needs[batch_key] = (
            FLOAT_BYTES * 3 * kernels * (2 * batch) ** 2,
            f"objective=mmd's kernel matrices of {batch_key}={batch}",
        )
    if batch_key not in needs:  # the batch's own points, drawn and scored
        needs[batch_key] = (
            FLOAT_BYTES * ACTIVATION_COPIES * batch * (dim + 1),
            f"{batch_key}={batch}",
        )
    n_train = getattr(config.dataset, "n_train", None) or 0
    n_test = getattr(config.dataset, "n_test", 0)
    needs["dataset.n_train"] = (
        2 * 8 * dim * (n_train + n_test),
        f"dataset.n_train={n_train} and dataset.n_test={n_test} points",
    )
    samples_key, count = samples
    needs[samples_key] = (2 * 8 * dim * count, f"{samples_key}={count}")
    return needs
