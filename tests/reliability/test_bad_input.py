"""The catalogue of bad input: every malformed input gandiv is known to meet, each a test.

Each one must end with exit code 2 and exactly one line on stderr that names the key or file at
fault and what is allowed, with no traceback, before any training, and must leave every file under
the working directory as it was: an existing finished run sits in the output root (and is the
target of `resume=`/`run=` entries), and the whole tree is hashed before and after.

Placeholders in the arguments name directories made for the entry (see `BROKEN`).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gandiv import config as C
from gandiv.build import check_combination
from gandiv.config import ObjectiveConfig
from gandiv.data.toy import gaussian
from gandiv.errors import UserError

from ..celeba_copy import make_copy, write_faces
from ..conftest import digest, run_dirs
from .conftest import copy_run

EXISTING = "outputs/2000-01-01/00-00-00-000000"  # the finished run in the output root


def _edit_checkpoint(run: Path, edit: Callable[[dict], dict]) -> None:
    path = run / "checkpoints" / "last.pt"
    torch.save(edit(torch.load(path, weights_only=True)), path)


def _truncate(path: Path, fraction: float) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])


def _foreign(root: Path, runs: dict[str, Path]) -> Path:
    path = root / "foreign"
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("db:\n  host: localhost\n")
    (path / ".hydra" / "overrides.yaml").write_text("- db.host=localhost\n")
    (path / "checkpoints").mkdir()
    torch.save({"weights": torch.zeros(3)}, path / "checkpoints" / "last.pt")
    return path


def _copy(edit: Callable[[Path], object]) -> Callable[[Path, dict[str, Path]], Path]:
    """A copy of the finished gaussian run, broken by `edit`."""

    def make(path: Path, runs: dict[str, Path]) -> Path:
        copy_run(runs["gaussian"], path)
        edit(path)
        return path

    return make


def _other_config(path: Path, runs: dict[str, Path]) -> Path:
    copy_run(runs["gaussian"], path)
    shutil.copy(runs["flow"] / "checkpoints" / "last.pt", path / "checkpoints" / "last.pt")
    return path


def _corrupt_celeba(path: Path, runs: dict[str, Path]) -> Path:
    """A tiny CelebA copy with two unreadable images."""
    images = make_copy(write_faces(path.with_name("faces")), path, "torchvision")
    (images / "000003.jpg").write_bytes(b"not a jpeg")
    (images / "000030.jpg").write_bytes(b"")
    return path


def _sweep(edit: Callable[[Path], object]) -> Callable[[Path, dict[str, Path]], Path]:
    """A finished sweep of two jobs (copies of the gaussian run), broken by `edit`."""

    def make(path: Path, runs: dict[str, Path]) -> Path:
        path.mkdir()
        for job in ("0", "1"):
            copy_run(runs["gaussian"], path / job)
            (path / job / ".hydra" / "overrides.yaml").write_text(f"- trainer.seed={job}\n")
        edit(path)
        return path

    return make


def _replace_with_folder(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    (path / "inside").mkdir(parents=True)


def _outside(path: Path, runs: dict[str, Path]) -> Path:
    """A folder outside the hashed tree: a cache folder, where the build's lock file stays."""
    return path.parent.with_name(f"{path.parent.name}-{path.name}")


# CelebA image runs, tiny (the overrides before the ones an entry tests)
CELEBA = ["dataset=celeba", "model=dcgan", "critic=dcgan", "objective=gan", "dataset.workers=0"]

# Directories an entry can point at: {name} in its arguments.
BROKEN: dict[str, Callable[[Path, dict[str, Path]], Path]] = {
    "empty": lambda path, runs: path.mkdir() or path,  # type: ignore[func-returns-value]
    "file": lambda path, runs: path.write_text("not a directory\n") and path,
    "foreign": lambda path, runs: _foreign(path.parent, runs),
    # killed before its first checkpoint
    "half_written": _copy(lambda run: (run / "checkpoints" / "last.pt").unlink()),
    "truncated_checkpoint": _copy(lambda run: _truncate(run / "checkpoints" / "last.pt", 0.5)),
    "garbage_checkpoint": _copy(
        lambda run: (run / "checkpoints" / "last.pt").write_bytes(bytes(range(256)) * 16)
    ),
    "checkpoint_without_optimizer": _copy(
        lambda run: _edit_checkpoint(
            run, lambda s: {k: v for k, v in s.items() if k != "optimizer"}
        )
    ),
    "cuda_checkpoint": _copy(lambda run: _edit_checkpoint(run, lambda s: {**s, "device": "cuda"})),
    "other_config": _other_config,  # a flow run's checkpoint in a gaussian run
    "cut_metrics": _copy(lambda run: _truncate(run / "metrics.jsonl", 0.3)),
    "corrupt_metrics": _copy(
        lambda run: (run / "metrics.jsonl").write_text(
            "{}\nnot json\n" + (run / "metrics.jsonl").read_text()
        )
    ),
    "bad_overrides": _copy(lambda run: (run / ".hydra" / "overrides.yaml").write_text("- [a\n")),
    "bad_config": _copy(lambda run: (run / ".hydra" / "config.yaml").write_text("a: [1\n")),
    "celeba_corrupt": _corrupt_celeba,
    "cache": _outside,
    # checkpoints with steps no run reaches
    "negative_step": _copy(lambda run: _edit_checkpoint(run, lambda s: {**s, "step": -5})),
    "huge_step": _copy(lambda run: _edit_checkpoint(run, lambda s: {**s, "step": 2**70})),
    "text_step": _copy(lambda run: _edit_checkpoint(run, lambda s: {**s, "step": "40"})),
    # files replaced by folders
    "metrics_folder": _copy(lambda run: _replace_with_folder(run / "metrics.jsonl")),
    "checkpoint_folder": _copy(lambda run: _replace_with_folder(run / "checkpoints" / "last.pt")),
    "config_folder": _copy(lambda run: _replace_with_folder(run / ".hydra" / "config.yaml")),
    "binary_metrics": _copy(lambda run: (run / "metrics.jsonl").write_bytes(b"\xff\xfe\x00" * 9)),
    # sweeps with one damaged job file, or a summary file's place taken
    "sweep_truncated_summary": _sweep(lambda root: _truncate(root / "1" / "summary.json", 0.5)),
    "sweep_summary_list": _sweep(lambda root: (root / "1" / "summary.json").write_text("[1]\n")),
    "sweep_summary_folder": _sweep(lambda root: _replace_with_folder(root / "1" / "summary.json")),
    "sweep_bad_overrides": _sweep(
        lambda root: (root / "1" / ".hydra" / "overrides.yaml").write_text("- [a\n")
    ),
    "sweep_overrides_mapping": _sweep(
        lambda root: (root / "1" / ".hydra" / "overrides.yaml").write_text("a: 1\n")
    ),
    "sweep_overrides_folder": _sweep(
        lambda root: _replace_with_folder(root / "1" / ".hydra" / "overrides.yaml")
    ),
    "sweep_csv_folder": _sweep(lambda root: _replace_with_folder(root / "sweep.csv")),
    "sweep_png_folder": _sweep(lambda root: _replace_with_folder(root / "sweep.png")),
}

# (arguments, text the one line must contain: the key or file, and what is allowed)
CATALOGUE = [
    # the command itself
    (["bogus"], "unknown command 'bogus'; choose one of: train, eval, plot"),
    # unknown or misspelt keys and group options
    (
        ["train", "objective=foo"],
        "objective=foo: unknown option; choose one of: direct, fgan, forward_kl, gan, hinge, js_pi",
    ),
    (["train", "dataset=nope"], "dataset=nope: unknown option; choose one of:"),
    (
        ["train", "+experiment=nope"],
        "experiment=nope: unknown option; choose one of: …fgan_mixture, ",
    ),
    (["train", "trainer.foo=1"], "trainer.foo: unknown key (`--cfg job` lists every key)"),
    (["train", "model.latent_dim=2"], "model.latent_dim: unknown key (`--cfg job` lists"),
    (["train", "+trainer.foo=1"], "trainer.foo: unknown key; trainer accepts: steps"),
    (["train", "+foo=3"], "foo: unknown key; the train config has: dataset"),
    (["train", "+dataset.mean=[1.0,2.0]"], "dataset.mean: unknown key"),
    (["train", "objective.name=forward_kl2"], "objective.name: 'forward_kl2' is not one of: dir"),
    (["eval", "run={run}", "+foo=1"], "foo: unknown key; the eval config has: run, seed"),
    (["plot", "run={run}", "extra=1"], "extra: unknown key (`--cfg job` lists every key)"),
    (["plot", "run={run}", "+extra=1"], "extra: unknown key; gandiv plot takes only run=DIR"),
    # wrong types
    (["train", "trainer.steps=abc"], "trainer.steps: Value 'abc' of type 'str' could not be"),
    (["train", "trainer.steps=2.5"], "trainer.steps: Value '2.5' of type 'float' could not be"),
    (["train", "trainer.steps=true"], "trainer.steps: Value 'True' of type 'bool' could not be"),
    (["train", "trainer.steps=[1,2]"], "trainer.steps: must be a single whole number, got [1, 2]"),
    (["train", "trainer.steps=null"], "trainer.steps: Incompatible value 'None' for field of type"),
    (["train", "trainer.betas=0.9"], "trainer.betas: must be a list in brackets [...], got 0.9"),
    (["train", "dataset.weights=abc"], "dataset.weights: must be a list in brackets [...]"),
    (["train", "dataset.means=[0,1]"], "dataset.means: each item must be a list in brackets"),
    (["train", "objective=js_pi", "objective.pi=abc"], "objective.pi: Value 'abc' of type 'str'"),
    (
        ["train", "objective=fgan", "objective.divergence=[kl]"],
        "objective.divergence: must be a single name, got ['kl']",
    ),
    (["train", "trainer.steps=[1"], "trainer.steps=[1: cannot parse this override"),
    # out-of-range values
    (["train", "trainer.steps=0"], "trainer.steps: must be >= 1, got 0"),
    (["train", "trainer.batch_size=0"], "trainer.batch_size: must be >= 1"),
    (["train", "trainer.seed=-1"], "trainer.seed: must be >= 0, got -1"),
    (["train", "trainer.threads=0"], "trainer.threads: must be >= 1, got 0"),
    (["train", "trainer.lr=-1"], "trainer.lr: must be > 0.0"),
    (["train", "trainer.lr=1e38"], "trainer.lr: must be > 0.0 and <= 1000.0"),
    (["train", "trainer.betas=[0.9]"], "trainer.betas: must be a list of 2 numbers"),
    (["train", "trainer.betas=[0.9,1.5]"], "trainer.betas: must be >= 0.0 and < 1.0"),
    (["train", "trainer.device=tpu"], "trainer.device: 'tpu' is not allowed; choose one of: auto"),
    (["train", "trainer.optimizer=lbfgs"], "trainer.optimizer: 'lbfgs' is not allowed"),
    (
        ["train", "trainer.precision=fp16"],
        "trainer.precision: 'fp16' is not allowed; choose one of: auto, bf16, fp32",
    ),
    (["train", "trainer.compile=fast"], "trainer.compile: Value 'fast' is not a valid bool"),
    (["train", "trainer.log_every=-1"], "trainer.log_every: must be >= 0"),
    (["train", "trainer.grid_points=8"], "trainer.grid_points: must be >= 16 and <= 4096, got 8"),
    (["train", "plot.every=-5"], "plot.every: must be >= 0, got -5"),
    (["train", "plot.grid=100000"], "plot.grid: must be >= 16 and <= 1000, got 100000"),
    (
        ["train", "objective=js_pi", "objective.pi=0"],
        "objective.pi: must be > 0.0 and < 1.0, got 0",
    ),
    (
        ["train", "objective=js_pi", "objective.pi=1"],
        "objective.pi: must be > 0.0 and < 1.0, got 1.0",
    ),
    (
        ["train", "objective=direct", "objective.divergence=js_pi", "objective.pi=1.5"],
        "objective.pi: must be > 0.0 and < 1.0, got 1.5",
    ),
    (["train", "objective=direct", "objective.divergence=js_pi"], "objective.pi: divergence=js_pi"),
    (["train", "objective=direct", "objective.pi=0.5"], "objective.pi: only applies to"),
    (
        ["train", "objective=direct", "objective.divergence=bogus"],
        "objective.divergence: unknown divergence 'bogus'; allowed: kl, reverse_kl",
    ),
    (["train", "objective=fgan", "objective.divergence=js_pi"], "for JS_π use objective=js_pi"),
    (
        ["train", "objective=fgan", "objective.divergence=nope"],
        "objective.divergence: 'nope' is not one of: kl, reverse_kl, pearson, neyman, "
        "squared_hellinger, jeffrey, js, gan, total_variation, triangular\n",
    ),
    (["train", "objective=fgan", "objective.generator=logit"], "objective.generator: 'logit'"),
    (
        ["train", "objective=gan", "objective.divergence=kl"],
        "objective.divergence: only applies to objective.generator=ratio",
    ),
    (
        ["train", "objective=js_pi", "objective.generator=ratio"],
        "objective.divergence: objective.generator=ratio needs the divergence to descend",
    ),
    (
        [
            "train",
            "objective=gan",
            "objective.generator=ratio",
            "objective.divergence=total_variation",
        ],
        "objective.divergence: 'total_variation' is not one of:",
    ),
    (["train", "objective=lsgan", "objective.coding=zero"], "objective.coding: 'zero'"),
    (["train", "objective=hinge", "objective.generator=ratio"], "objective.generator: unknown key"),
    (["train", "objective=gan", "objective.gradient_penalty=-1"], "gradient_penalty: must be >= 0"),
    (
        ["train", "objective=gan", "objective.packing=3", "trainer.batch_size=64"],
        "objective.packing: 3 must divide trainer.batch_size=64",
    ),
    (
        ["train", "objective=lsgan", "dataset=ring8", "model=mlp", "objective.packing=5"],
        "objective.packing: 5 must divide trainer.batch_size=512",
    ),
    (["train", "objective=hinge", "objective.packing=0"], "objective.packing: must be >= 1"),
    (["train", "objective=mmd", "objective.bandwidths=[]"], "bandwidths: must not be an empty"),
    (["train", "objective=mmd", "objective.bandwidths=[0.5,0]"], "bandwidths: must be > 0.0"),
    (
        ["train", "objective=mmd", "objective.features=pixels"],
        "objective.features: 'pixels' is not allowed; choose one of: auto, data, random_conv",
    ),
    (
        ["train", "objective=mmd", "objective.features=random_conv"],
        "objective.features: random_conv is a convolutional feature map for images, not vector "
        "(toy) data; use objective.features=auto or data",
    ),
    (
        ["train", "objective=mmd", "objective.bandwidth_scale=mean"],
        "objective.bandwidth_scale: 'mean' is not allowed; choose one of: auto, absolute, median",
    ),
    (["train", "objective=mmd", "objective.median_factors=[1,-2]"], "median_factors: must be >"),
    (["train", "objective=mmd", "objective.feature_width=0"], "feature_width: must be >= 1"),
    (["train", "objective=gan", "trainer.critic_steps=0"], "trainer.critic_steps: must be >= 1"),
    (["train", "objective=gan", "critic.ema=1.0"], "critic.ema: must be >= 0.0 and < 1.0"),
    (["train", "objective=gan", "critic.width=0"], "critic.width: must be >= 1, got 0"),
    (["train", "critic.activation=sigmoid"], "critic.activation: 'sigmoid' is not allowed"),
    (["train", "model.init_std=0"], "model.init_std: must be > 0.0, got 0.0"),
    (["train", "model=flow", "model.depth=0"], "model.depth: must be >= 1"),
    (["train", "model=mlp", "objective=gan", "model.latent_dim=0"], "model.latent_dim: must be >="),
    (["train", "model=mlp", "model.activation=sigmoid"], "model.activation: 'sigmoid'"),
    (["train", "dataset.n_test=0"], "dataset.n_test: must be >= 2"),
    (["train", "dataset.n_train=0"], "dataset.n_train: must be >= 1, got 0"),
    (["train", "dataset=swiss_roll", "dataset.noise=-0.1"], "dataset.noise: must be > 0.0"),
    (
        ["train", "dataset=swiss_roll", "dataset.scale=0"],
        "dataset.scale: must be > 0.0 and <= 1000000.0, got 0.0",
    ),
    (
        ["train", "dataset.n_train=100", "trainer.batch_size=512"],
        "trainer.batch_size: 512 is larger than the training set (dataset.n_train=100)",
    ),
    (["train", "objective=mmd", "trainer.batch_size=1"], "objective=mmd needs at least 2 samples"),
    # impossible combinations
    (["train", "model=mlp"], "forward_kl needs a model with a density, but model=mlp"),
    (["train", "model=mlp", "objective=reverse_kl"], "reverse_kl needs a model with a density"),
    (["train", "model=mlp", "objective=direct"], "direct needs a model with a density"),
    (["train", "model=linear"], "forward_kl needs a model with a density, but model=linear"),
    (
        ["train", "dataset=line", "objective=reverse_kl"],
        "objective: reverse_kl is undefined on this dataset: its points lie on a curve of zero "
        "width, where no density exists",
    ),
    (
        ["train", "dataset=circle", "objective=direct"],
        "objective: direct is undefined on this dataset: … use objective=spread, a sample-based",
    ),
    (["train", "objective=spread", "objective.sigma=-1"], "objective.sigma: must be > 0.0, got -1"),
    (
        ["train", "dataset=line", "objective=spread", "model=gaussian"],
        "model: objective=spread trains a deterministic generator x = G(z) with an encoder, but "
        "model=gaussian is not one; use model= one of: mlp, linear",
    ),
    (["train", "objective=gan", "objective.sigma=-1"], "objective.sigma: must be > 0.0, got -1"),
    (
        ["train", "objective=spread", "objective.noise=cauchy"],
        "objective.noise: 'cauchy' is not allowed; choose one of: gaussian, laplace",
    ),
    (
        ["train", "dataset=line", "dataset.width=-1"],
        "dataset.width: must be >= 0.0 and <= 1000000.0, got -1.0",
    ),
    (["train", "dataset=ica", "dataset.dim=0"], "dataset.dim: must be >= 1 and <= 64, got 0"),
    (
        ["train", "model=flow", "dataset.means=[[-1],[1]]"],
        "model: a coupling flow needs data of dimension",
    ),
    # malformed mixture and Gaussian specs
    (["train", "dataset.weights=[0.3,0.3]"], "dataset: weights must sum to 1"),
    (["train", "dataset.weights=[-0.5,1.5]"], "dataset: weights must all be positive (> 0)"),
    (["train", "dataset.weights=[]"], "dataset.weights: must not be an empty list"),
    (["train", "dataset.weights=[0.2,0.3,0.5]"], "dataset: "),
    (["train", "dataset.means=[[0,0]]"], "dataset: stds and means disagree on the number of"),
    (["train", "dataset.means=[[0.0,0.0],[1.0,1.0,1.0]]"], "dataset: means must be a numeric"),
    (["train", "dataset.stds=[0.5,-1.0]"], "dataset: stds must all be positive (> 0)"),
    (["train", "dataset.stds=null"], "dataset: give exactly one of dataset.stds"),
    (
        ["train", "dataset.covs=[[[1,0],[0,1]],[[1,0],[0,1]]]"],
        "dataset: give exactly one of dataset.stds (isotropic) or dataset.covs (full)",
    ),
    (
        ["train", "dataset.stds=null", "dataset.covs=[[[1,2],[2,1]],[[1,0],[0,1]]]"],
        "dataset: covariance of component 0 is not positive-definite",
    ),
    (
        ["train", "dataset=gaussian", "dataset.cov=[[1,2],[2,1]]"],
        "dataset: covariance of component 0 is not positive-definite",
    ),
    (
        ["train", "dataset=gaussian", "dataset.cov=[[1,0.5],[0.2,1]]"],
        "dataset: covariance of component 0 is not symmetric",
    ),
    (
        ["train", "dataset=gaussian", "dataset.mean=[0,0,0]"],
        "dataset: cov must have shape (d, d) = (3, 3) to match a 3-dimensional mean",
    ),
    # CelebA: the copy missing, empty or corrupt; impossible settings
    (["train", *CELEBA], "dataset.root: is required but has no value"),
    (
        ["train", *CELEBA, "dataset.root=no/celeba"],
        "dataset.root: 'no/celeba' does not exist; expected 'no/celeba/celeba/img_align_celeba/"
        "*.jpg' with 'list_eval_partition.txt' beside it (torchvision layout) or … (Kaggle "
        "layout). gandiv never downloads CelebA",
    ),
    (
        ["train", *CELEBA, "dataset.root={empty}"],
        "dataset.root: no CelebA images under '{empty}': expected '{empty}/celeba/img_align_celeba",
    ),
    (
        ["train", *CELEBA, "dataset.root={celeba_corrupt}", "dataset.cache_dir={cache}"],
        "celeba_corrupt/celeba/img_align_celeba: 2 of 36 images are unreadable, corrupt or smaller "
        "than the 140×140 crop (first: 000003.jpg (…), 000030.jpg (…)); replace them from a good",
    ),
    (["train", *CELEBA, "dataset.root=x", "dataset.size=48"], "dataset.size: must be a power of"),
    (["train", *CELEBA, "dataset.root=x", "dataset.on_device=gpu"], "dataset.on_device: 'gpu'"),
    (["train", *CELEBA, "dataset.root=x", "dataset.crop=0"], "dataset.crop: must be >= 1, got 0"),
    # image networks on vector data, vector networks and density objectives on images
    (["train", "model=dcgan", "objective=gan"], "model: model=dcgan generates images, not vector"),
    (["train", "model=mlp", "objective=gan", "critic=dcgan"], "critic: critic=dcgan is for images"),
    (
        ["train", *CELEBA, "dataset.root=x", "model=mlp"],
        "model: model=mlp is for vectors, not dataset=celeba; use model= one of: dcgan",
    ),
    (["train", *CELEBA, "dataset.root=x", "model=flow"], "model: model=flow is for vectors"),
    (
        ["train", *CELEBA, "dataset.root=x", "critic=mlp"],
        "critic: critic=mlp is for vectors, not dataset=celeba; use critic= one of: dcgan",
    ),
    (
        ["train", *CELEBA, "dataset.root=x", "objective=forward_kl"],
        "objective: objective=forward_kl needs densities, which dataset=celeba images do not have",
    ),
    (["eval", "run={run}", "critic=dcgan"], "critic: critic=dcgan is for images; this run's data"),
    # resume= pointed at something it cannot continue
    (["train", "resume=does/not/exist"], "resume: 'does/not/exist' is not a directory"),
    (["train", "resume={file}"], "is not a directory; give a run directory to continue"),
    (["train", "resume={empty}"], "is not a gandiv run directory (no "),
    (
        ["train", "resume={foreign}"],
        "foreign/.hydra/config.yaml: not a valid gandiv train config (db: unknown key",
    ),
    (["train", "resume={half_written}"], "has no checkpoints/last.pt to resume from"),
    (
        ["train", "resume={truncated_checkpoint}", "trainer.steps=80"],
        "checkpoints/last.pt: unreadable or corrupt checkpoint (…); a gandiv checkpoint is needed",
    ),
    (
        ["train", "resume={garbage_checkpoint}", "trainer.steps=80"],
        "checkpoints/last.pt: unreadable or corrupt checkpoint",
    ),
    (
        ["train", "resume={checkpoint_without_optimizer}", "trainer.steps=80"],
        "checkpoints/last.pt: not a gandiv checkpoint (missing optimizer)",
    ),
    (
        ["train", "resume={cuda_checkpoint}", "trainer.steps=80"],
        "trainer.device: the run was trained on cuda and can only be resumed there",
    ),
    (
        ["train", "resume={other_config}", "trainer.steps=80"],
        "resume: model.depth, model.hidden_layers, model.init_mean_std",
    ),
    (
        ["train", "resume={cut_metrics}", "trainer.steps=80"],
        "cut_metrics/metrics.jsonl: has … bytes but the checkpoint recorded …; the log was cut",
    ),
    (["train", "resume={bad_overrides}"], ".hydra/overrides.yaml: unreadable ("),
    (["train", "resume={bad_config}"], "bad_config/.hydra/config.yaml: unreadable (while parsing"),
    (
        ["train", "resume={run}", "trainer.steps=80", "model.init_std=2.0"],
        "resume: model.init_std differ from the run's config; resuming may only change plot.",
    ),
    (["train", "resume={run}"], "trainer.steps: the run already reached step 40; pass a larger"),
    (["train", "resume={run}", "trainer.steps=20"], "trainer.steps: the run already reached step"),
    (
        ["train", "-m", "resume={run}", "trainer.steps=80,90"],
        "resume: cannot be combined with -m/--multirun",
    ),
    # eval and plot pointed at something they cannot read
    (["eval"], "run: missing; usage: gandiv eval run=DIR"),
    (["plot"], "run: missing; usage: gandiv plot run=DIR"),
    (["eval", "run=does/not/exist"], "is not a gandiv run or sweep directory"),
    (["eval", "run={empty}"], "is not a gandiv run or sweep directory (no .hydra/config.yaml)"),
    (["eval", "run=nowhere", "run=elsewhere"], "'elsewhere' is not a gandiv run or sweep"),
    (["plot", "run=nowhere"], "is not a gandiv run directory"),
    (["eval", "run={foreign}"], "foreign/.hydra/config.yaml: not a valid gandiv train config (db:"),
    (["plot", "run={foreign}"], "foreign/.hydra/config.yaml: not a valid gandiv train config"),
    (["eval", "run={half_written}"], "checkpoints/last.pt: missing; this run has no checkpoint"),
    (["plot", "run={half_written}"], "checkpoints/last.pt: missing; this run has no checkpoint"),
    (
        ["eval", "run={truncated_checkpoint}"],
        "checkpoints/last.pt: unreadable or corrupt checkpoint (…); a gandiv checkpoint is needed",
    ),
    (["plot", "run={garbage_checkpoint}"], "checkpoints/last.pt: unreadable or corrupt checkpoint"),
    (
        ["eval", "run={other_config}"],
        "other_config/checkpoints/last.pt: does not match the run's config (Error(s) in loading "
        "state_dict for GaussianModel); was it copied from another run?",
    ),
    (["eval", "run={bad_config}"], "bad_config/.hydra/config.yaml: unreadable (while parsing"),
    (["plot", "run={corrupt_metrics}"], "metrics.jsonl: line 2 is not JSON; the file is corrupt"),
    (["eval", "run={run}", "eval.pis=[1.5]"], "eval.pis: must be > 0.0 and < 1.0, got 1.5"),
    (["eval", "run={run}", "eval.num_samples=5"], "eval.num_samples: must be >= 100 and <="),
    (["eval", "run={run}", "eval.critic.steps=0"], "eval.critic.steps: must be >= 1, got 0"),
    (
        ["eval", "run={run}", "eval.critic.steps=lots"],
        "eval.critic.steps: must be a whole number >= 1 or auto, got 'lots'",
    ),
    (
        ["eval", "run={run}", "eval.images.steps=5"],
        "eval.images.steps: removed; the independent critic's updates are eval.critic.steps",
    ),
    (
        ["eval", "run={run}", "eval.critic.divergences=[bogus]"],
        "eval.critic.divergences: 'bogus' is not one of: kl, reverse_kl",
    ),
    (["eval", "run={run}", "critic.ema=0.5"], "critic.ema: applies to training; the evaluation"),
    (["eval", "run={run}", "device=tpu"], "device: 'tpu' is not allowed; choose one of: auto"),
    # output directories that cannot be written, or that already hold a run
    (["train", "hydra.run.dir=/proc/gandiv-run"], "/proc/gandiv-run: No such file or directory"),
    (["train", "hydra.run.dir={file}"], "file: File exists; choose a writable place"),
    (["train", "hydra.run.dir={file}/run"], "file/run: Not a directory; choose a writable place"),
    (
        ["train", "hydra.run.dir={run}"],
        "hydra.run.dir: '{run}' already holds a run; continue it with resume={run} or choose",
    ),
]


# Every number of every config group: infinite and NaN floats, whole numbers beyond 64 bits.
# (the arguments that select the option, its key prefix, its schema)
OPTIONS: list[tuple[list[str], str, type]] = [
    ([], "trainer", C.TrainerConfig),
    ([], "plot", C.PlotConfig),
    ([], "model", C.GaussianModelConfig),
    (["model=flow"], "model", C.FlowConfig),
    (["model=mlp", "objective=gan"], "model", C.MLPGeneratorConfig),
    (["model=linear", "objective=gan"], "model", C.LinearGeneratorConfig),
    (["objective=gan"], "critic", C.MLPCriticConfig),
    (["objective=gan"], "objective", C.AdversarialConfig),
    (["objective=fgan"], "objective", C.FGANConfig),
    (["objective=js_pi"], "objective", C.JSPiConfig),
    (["objective=direct"], "objective", C.DirectConfig),
    (["objective=mmd"], "objective", C.MMDConfig),
    (["objective=spread", "model=mlp"], "objective", C.SpreadConfig),
    ([], "dataset", C.MixtureConfig),
    (["dataset=gaussian"], "dataset", C.GaussianDataConfig),
    (["dataset=swiss_roll"], "dataset", C.SwissRollConfig),
    (["dataset=line"], "dataset", C.LineConfig),
    (["dataset=circle"], "dataset", C.CircleConfig),
    (["dataset=ica"], "dataset", C.ICAConfig),
]
EVAL_OPTIONS: list[tuple[str, type]] = [
    ("", C._EvalTop),
    ("critic", C.MLPCriticConfig),
    ("eval", C.EvalOptions),
    ("eval.critic", C.EvalCriticConfig),
]


def _nested(annotation: str, value: str) -> str | None:
    """`value` written where `annotation` expects it (each list of two), None: not a number."""
    kind = annotation.removesuffix(" | None")
    if kind in ("float", "int"):
        return value
    if kind.startswith("list["):
        inner = _nested(kind[len("list[") : -1], value)
        return None if inner is None else f"[{inner},{inner}]"
    return None


def _number_entries() -> list[tuple[list[str], str]]:
    """inf, -inf and nan for every float key, 2^64 for every whole-number key."""
    entries = []
    fields = [
        (["train", *args], prefix, f)
        for args, prefix, schema in OPTIONS
        for f in dataclasses.fields(schema)
    ]
    fields += [
        (["eval", "run={run}"], prefix, f)
        for prefix, schema in EVAL_OPTIONS
        for f in dataclasses.fields(schema)
    ]
    seen = set()
    for args, prefix, f in fields:
        key = f"{prefix}.{f.name}" if prefix else f.name
        kind = str(f.type).removesuffix(" | None")
        if key in seen or "bool" in kind or "str" in kind or key == "run":
            continue
        seen.add(key)
        values = [
            ("inf", "must be a finite number, got inf"),
            ("nan", "must be a finite number, got nan"),
        ]
        if "float" not in kind:
            values = [(str(2**64), f"must fit a 64-bit integer (at most {2**63 - 1}), got")]
        elif key in ("trainer.lr", "model.init_std"):
            values.append(("-inf", "must be a finite number, got -inf"))
        for value, message in values:
            written = _nested(str(f.type), value)
            if written is not None:
                entries.append(([*args, f"{key}={written}"], f"{key}: {message}"))
    return entries


CATALOGUE += _number_entries()
CATALOGUE += [
    # values that pass their own check and overflow later, or that float32 cannot resolve
    (["train", "dataset.means=[[1e308,0],[0,1]]"], "dataset.means: must be within ±1e+06"),
    (["train", "dataset.means=[[-1e7,0],[0,1]]"], "dataset.means: must be within ±1e+06 (the"),
    (["train", "dataset.stds=[1e300,1]"], "dataset.stds: must be within ±1e+06"),
    (
        ["train", "dataset=gaussian", "dataset.cov=[[1e-320,0],[0,1]]"],
        "dataset: its finest scale (1e-160) is below 1/100000 of its extent (…): float32 samples",
    ),
    (
        ["train", "dataset.stds=null", "dataset.covs=[[[1e13,0],[0,1]],[[1,0],[0,1]]]"],
        "dataset.covs: must be within ±1e+12",
    ),
    (["train", "dataset.stds=[1e-9,1e-9]"], "dataset: its finest scale (1e-09) is below 1/100000"),
    (["train", "dataset.means=[[9e5,0],[0,1]]"], "dataset: its finest scale (0.4) is below"),
    (["train", "dataset=swiss_roll", "dataset.noise=1e-12"], "dataset: its finest scale (… below"),
    (["train", "dataset=swiss_roll", "dataset.scale=1e300"], "dataset.scale: must be > 0.0 and"),
    (["train", "dataset=line", "dataset.end=[1e300,0]"], "dataset.end: must be within ±1e+06"),
    (["train", "dataset=circle", "dataset.radius=1e300"], "dataset.radius: must be > 0.0 and <="),
    (["train", "dataset=circle", "dataset.center=[1e7,0]"], "dataset.center: must be within"),
    (["train", "dataset=ica", "dataset.mixing=[[1e300,0],[0,1]]"], "dataset.mixing: must be with"),
    (["train", "dataset.weights=[1e308,1e308]"], "dataset: weights must sum to 1"),
    (
        ["train", "objective=gan", "objective.noise=gaussian", "objective.sigma=1e309"],
        "objective.sigma: must be a finite number, got inf",
    ),
    (["train", "trainer.steps=99999999999999999999999"], "trainer.steps: must fit a 64-bit"),
    (["train", "trainer.seed=-99999999999999999999999"], "trainer.seed: must fit a 64-bit"),
    # the machine's resources: threads beyond its cores, networks and batches beyond its memory
    (["train", "trainer.threads=100000"], "trainer.threads: must be between 1 and … (the cores"),
    (["eval", "run={run}", "threads=100000"], "threads: must be between 1 and … (the cores this"),
    (
        ["train", "objective=gan", "critic.width=1000000"],
        "critic.width: this needs about … TB of memory (critic.width=1000000, critic.depth=… with "
        "trainer.batch_size=512: … TB), but … are available on this machine; make critic.width",
    ),
    (
        ["train", "objective=gan", "critic.depth=1000000"],
        "critic.width: this needs about … TB of memory (critic.width=128, critic.depth=1000000 "
        "with trainer.batch_size=512: … TB), but … make critic.width or critic.depth smaller",
    ),
    (["train", "model=flow", "model.width=1000000"], "model.width: this needs about … of memory"),
    (
        ["train", "model=mlp", "objective=gan", "model.width=1000000"],
        "model.width: this needs about",
    ),
    (["train", "dataset.n_train=1000000000000"], "dataset.n_train: this needs about … TB of"),
    (
        ["train", "objective=mmd", "dataset.n_train=10000000", "trainer.batch_size=10000000"],
        "trainer.batch_size: this needs about … of memory (objective=mmd's kernel matrices of",
    ),
    (
        ["train", "objective=spread", "model=mlp", "objective.encoder_width=1000000"],
        "objective.encoder_width: this needs about",
    ),
    (["eval", "run={run}", "critic.width=1000000"], "critic.width: this needs about … TB of mem"),
    # nonsense that validates key by key
    (
        [
            "eval",
            "run={run}",
            "eval.critic.divergences=[wasserstein]",
            "eval.critic.gradient_penalty=0",
        ],
        "eval.critic.gradient_penalty: wasserstein needs a Lipschitz critic: a gradient penalty",
    ),
    (["eval", "run={run}", "eval.critic.divergences=[js,kl,js]"], "divergences: lists js more th"),
    (["eval", "run={run}", "eval.pis=[0.5,0.5]"], "eval.pis: lists 0.5 more than once"),
    (["eval", "run={run}", "eval.nearest=[kl,kl]"], "eval.nearest: lists kl more than once"),
    (["eval", "run={run}", "eval.critic.lr=1e30"], "eval.critic.lr: must be > 0.0 and <= 1000.0"),
    (["train", "-m", "trainer.seed=range(0)"], "trainer.seed=range(0): sweeps over no values; a"),
    (["train", "-m", "trainer.seed=range(3,3)"], "trainer.seed=range(3,3): sweeps over no value"),
    (["train", "-m", "trainer.seed=range(5,0)"], "trainer.seed=range(5,0): sweeps over no value"),
    # config groups and keys removed
    (["train", "trainer=null"], "trainer: a config group needs an option; it cannot be null: cho"),
    (["train", "~trainer"], "trainer: a config group needs an option; it cannot be deleted"),
    (["train", "dataset=null"], "dataset: a config group needs an option; it cannot be null"),
    (["train", "objective=null"], "objective: a config group needs an option; it cannot be null"),
    (["eval", "run={run}", "critic=null"], "critic: a config group needs an option; it cannot be"),
    (["train", "~trainer.steps"], "trainer.steps: every key of gandiv train's config is needed a"),
    (["train", "~dataset.n_test"], "dataset.n_test: every key of gandiv train's config is needed"),
    (["eval", "run={run}", "~eval.critic.steps"], "eval.critic.steps: every key of gandiv eval's"),
    # launchers asked for nothing
    (
        ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "trainer.seed=0,1"],
        "hydra.launcher.n_jobs: must be a number of processes (>= 1; -1: one per core), got 0",
    ),
    (
        ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=two", "trainer.seed=0,1"],
        "hydra.launcher.n_jobs: must be a number of processes",
    ),
    (
        ["train", "-m", "trainer.seed=0,1", "hydra.sweep.dir=/proc/gandiv-sweep"],
        "/proc/gandiv-sweep: No such file or directory; choose a writable place (hydra.sweep.dir)",
    ),
    # checkpoints with steps no run reaches
    (["eval", "run={negative_step}"], "negative_step/checkpoints/last.pt: records step -5, which"),
    (["plot", "run={negative_step}"], "negative_step/checkpoints/last.pt: records step -5"),
    (["eval", "run={huge_step}"], "huge_step/checkpoints/last.pt: records step 1180591620717411"),
    (["plot", "run={huge_step}"], "huge_step/checkpoints/last.pt: records step"),
    (["plot", "run={text_step}"], "text_step/checkpoints/last.pt: records step '40', which no"),
    # files replaced by folders, or unreadable
    (["plot", "run={metrics_folder}"], "metrics_folder/metrics.jsonl: unreadable (Is a directory"),
    (["plot", "run={binary_metrics}"], "binary_metrics/metrics.jsonl: unreadable (not UTF-8 text"),
    (["eval", "run={checkpoint_folder}"], "checkpoint_folder/checkpoints/last.pt: missing; this"),
    (["plot", "run={checkpoint_folder}"], "checkpoint_folder/checkpoints/last.pt: missing; this"),
    (["eval", "run={config_folder}"], "is not a gandiv run or sweep directory (no .hydra/config"),
    (["plot", "run={config_folder}"], "is not a gandiv run directory (no .hydra/config.yaml)"),
    (["train", "resume={checkpoint_folder}"], "has no checkpoints/last.pt to resume from"),
    (["train", "resume={config_folder}"], "config_folder/.hydra/config.yaml: unreadable ("),
    # a sweep with one damaged job file, or a summary file's place taken: nothing is written
    (
        ["sweep", "summarize", "{sweep_truncated_summary}"],
        "sweep_truncated_summary/1/summary.json: unreadable (Unterminated string … the job's file "
        "is damaged: restore it, or move the job out of the sweep",
    ),
    (["sweep", "summarize", "{sweep_summary_list}"], "1/summary.json: not a JSON object; the file"),
    (["sweep", "summarize", "{sweep_summary_folder}"], "1/summary.json: unreadable (Is a direct"),
    (["sweep", "summarize", "{sweep_bad_overrides}"], "1/.hydra/overrides.yaml: unreadable (whil"),
    (["sweep", "summarize", "{sweep_overrides_mapping}"], "1/.hydra/overrides.yaml: not a list o"),
    (["sweep", "summarize", "{sweep_overrides_folder}"], "1/.hydra/overrides.yaml: unreadable (Is"),
    (
        ["sweep", "summarize", "{sweep_csv_folder}"],
        "sweep_csv_folder/sweep.csv: cannot be written (a folder or a read-only file is in its "
        "place); move it away, then summarize the sweep again",
    ),
    (["sweep", "summarize", "{sweep_png_folder}"], "sweep_png_folder/sweep.png: cannot be writte"),
    (["eval", "run={sweep_truncated_summary}"], "sweep_truncated_summary/1/summary.json: unreadab"),
    (["eval", "run={sweep_summary_folder}"], "sweep_summary_folder/1/summary.json: unreadable ("),
    (["eval", "run={sweep_bad_overrides}"], "sweep_bad_overrides/1/.hydra/overrides.yaml: unread"),
    (["eval", "run={sweep_csv_folder}"], "sweep_csv_folder/sweep.csv: cannot be written (a folder"),
    (["sweep", "summarize", "{run}"], "not a gandiv sweep directory (no */.hydra/overrides.yaml)"),
]


def _fill(text: str, made: dict[str, Path]) -> str:
    for name, path in made.items():
        text = text.replace(f"{{{name}}}", str(path))
    return text


def _assert_in_order(parts: list[str], text: str) -> None:
    """Each part occurs in `text`, in this order ("…" in a message stands for any text)."""
    position = 0
    for part in parts:
        found = text.find(part, position)
        assert found >= 0, f"{part!r} not in {text[position:]!r}"
        position = found + len(part)


def _budgeted(catalogue: list[tuple[list[str], str]]) -> list[Any]:
    """The default suite runs the bound and choice checks (one generic function: `must be >= 1`,
    `'x' is not allowed`) once per config group; `make test-reliability` runs every entry."""
    seen: set[str] = set()
    params = []
    for args, message in catalogue:
        check = re.match(
            r"(\w+)\.[\w.]+: (must be [<>]|must be a finite|must fit a 64-bit|'[^']*' is not "
            r"allowed)",
            message,
        )
        group = check.group(1) if check else None
        marks = [pytest.mark.slow] if group in seen else []
        if group is not None:
            seen.add(group)
        params.append(pytest.param(args, message, marks=marks, id=" ".join(args)))
    return params


@pytest.mark.parametrize(("args", "message"), _budgeted(CATALOGUE))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    gandiv, tmp_path, finished_runs, args, message
):
    made = {"run": copy_run(finished_runs["gaussian"], tmp_path / EXISTING)}
    for name, make in BROKEN.items():
        if any(f"{{{name}}}" in arg for arg in args):
            made[name] = make(tmp_path / name, finished_runs)
    before = digest(tmp_path)
    result = gandiv(*[_fill(arg, made) for arg in args])
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    _assert_in_order(_fill(message, made).split("…"), result.err)
    lines = result.err.splitlines()
    program = f"gandiv {args[0]}"
    if args == ["bogus"]:  # the usage comes first, then the one error line
        lines, program = [line for line in lines if "error:" in line], "gandiv"
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), result.err
    assert digest(tmp_path) == before  # nothing written, nothing changed, no run left behind


def test_no_arguments_prints_the_usage_and_exits_2(gandiv, tmp_path):
    result = gandiv()
    assert result.code == 2 and result.err.startswith("usage: gandiv <command>")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(gandiv, tmp_path):
    result = gandiv("train", "trainer.device=cuda")
    assert result.code == 2
    assert "trainer.device: cuda requested but no CUDA device is available" in result.err
    assert run_dirs(tmp_path) == []


def test_objective_needing_the_data_density_refuses_data_without_one():
    data = gaussian([0.0], [[1.0]])
    data.has_density = False  # as for a dataset known only through samples
    model = type("M", (), {"name": "gaussian"})()
    for name in ("reverse_kl", "direct"):
        with pytest.raises(UserError, match=f"{name} needs the data's density"):
            check_combination(ObjectiveConfig(name=name), model, data)
    check_combination(ObjectiveConfig(name="forward_kl"), model, data)
