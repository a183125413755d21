"""`gandiv train` and `gandiv eval` on images: DCGAN runs on a tiny generated CelebA copy (CPU)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gandiv.commands.evaluate import AUTO_CRITIC_STEPS, CPU_IMAGE_CRITIC_STEPS, critic_steps
from gandiv.divergences import get_divergence
from gandiv.objectives.adversarial import VariationalDivergence

from .celeba_copy import COUNTS, SIZE, images, make_copy, write_faces
from .conftest import final_model_state, metrics_without_time, only_run, read_json, run_cli


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny torchvision-layout copy, its cache built by the first run and reused after."""
    root = tmp_path_factory.mktemp("celeba")
    make_copy(write_faces(root / "faces"), root / "data", "torchvision")
    return root / "data"


EVAL_TINY = ["eval.critic.steps=5", "eval.images.batch_size=8", "eval.images.grid=16"]


def test_a_dcgan_run_writes_its_directory_and_evaluates(gandiv, tmp_path: Path, copy: Path):
    started = time.perf_counter()
    result = gandiv("train", *images(copy, "objective=ns_gan", "trainer.steps=20", "plot.every=10"))
    train_s = time.perf_counter() - started
    assert result.code == 0, result.err
    run = only_run(tmp_path)
    for name in (
        ".hydra/config.yaml",
        "train.log",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.pt",
        "figures/samples.png",
        "figures/curves.png",
        "animation.gif",
        "samples.npy",
    ):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "figures").iterdir()) == ["curves.png", "samples.png"]
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert summary["model"] == "dcgan" and summary["params"] == {}
    assert np.isfinite([summary["loss"], summary["critic_loss"], summary["bound"]]).all()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert not any("kl_pq" in r for r in records)  # no ground truth exists for images
    samples = np.load(run / "samples.npy")
    assert samples.shape == (64, SIZE, SIZE, 3) and samples.dtype == np.uint8  # capped at 64
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["figures"]["steps"] == [0, 10, 20]

    started = time.perf_counter()
    result = gandiv("eval", f"run={run}", *EVAL_TINY)
    eval_s = time.perf_counter() - started
    assert result.code == 0, result.err
    report = read_json(run / "eval.json")
    assert report["n_test"] == COUNTS["test"]
    assert report["heldout_nll"] is None and "no density" in report["heldout_nll_reason"]
    assert report["ground_truth"] is None
    assert report["independent_critic_architecture"]["name"] == "dcgan"
    assert report["independent_critic_architecture"]["width"] == 8  # the run's critic
    for name in ("js", "kl"):
        critic = report["independent_critic"][name]
        assert np.isfinite(critic["estimate"]) and critic["steps"] == 5
    for name in ("eval_samples.png", "test_images.png"):
        assert (run / "figures" / name).stat().st_size > 0

    result = gandiv("plot", f"run={run}")  # redraws the image figures from the checkpoint
    assert result.code == 0, result.err
    print(f"\n20-step {SIZE}×{SIZE} DCGAN run: train {train_s:.2f} s, eval {eval_s:.2f} s")


@pytest.fixture(scope="module")
def tiny_run(copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step tiny DCGAN run, evaluated by the tests below (each on a copy of its own)."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    args = images(copy, "objective=ns_gan", "trainer.steps=3", "plot.every=0")
    result = run_cli("train", *args, f"hydra.run.dir={out}", cwd=out.parent)
    assert result.returncode == 0, result.stderr
    return out


def _copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_eval_critic_steps_set_the_image_critics_updates_with_progress(
    gandiv, tmp_path: Path, tiny_run: Path
):
    """eval.critic.steps means each independent critic's updates on images as on vectors; the
    log says so and shows the critics' progress."""
    run = _copy_run(tiny_run, tmp_path)
    result = gandiv("eval", f"run={run}", "eval.critic.steps=7", *EVAL_TINY[1:])
    assert result.code == 0, result.err
    report = read_json(run / "eval.json")
    assert {report["independent_critic"][n]["steps"] for n in ("js", "kl")} == {7}
    budget = report["independent_critic_budget"]
    assert (budget["steps"], budget["setting"], budget["batch_size"]) == (7, 7, 8)
    log = (run / "eval.log").read_text()
    assert "independent critics: 7 updates each (eval.critic.steps=7)" in log
    # two critics (one per half of the test images) of 7 updates each, a line every tenth
    assert "independent critics: 14/14 updates" in log
    assert log.count("/14 updates") == 7  # at 2, 4, ..., 12 and 14


def test_eval_critic_steps_auto_is_small_on_the_cpu_and_says_so(
    gandiv, tmp_path: Path, tiny_run: Path
):
    run = _copy_run(tiny_run, tmp_path)
    result = gandiv("eval", f"run={run}", "device=cpu", *EVAL_TINY[1:])
    assert result.code == 0, result.err
    report = read_json(run / "eval.json")
    steps = CPU_IMAGE_CRITIC_STEPS
    assert report["independent_critic"]["js"]["steps"] == steps
    assert report["independent_critic_budget"] == {
        "steps": steps,
        "setting": "auto",
        "device": "cpu",
        "batch_size": 8,
    }
    log = (run / "eval.log").read_text()
    assert f"independent critics: {steps} updates each (eval.critic.steps=auto on the CPU" in log
    assert "set eval.critic.steps=N for more" in log
    assert f"independent critics: {2 * steps}/{2 * steps} updates" in log


def test_eval_critic_steps_auto_follows_the_data_and_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert critic_steps("auto", True, cpu)[0] == CPU_IMAGE_CRITIC_STEPS < AUTO_CRITIC_STEPS
    assert critic_steps("auto", True, cuda)[0] == AUTO_CRITIC_STEPS == 1000
    assert critic_steps("auto", False, cpu)[0] == AUTO_CRITIC_STEPS  # vectors: cheap anywhere
    for on_images in (True, False):  # a number given always wins
        for device in (cpu, cuda):
            steps, line = critic_steps(3000, on_images, device)
            assert steps == 3000 and line.endswith("(eval.critic.steps=3000)")
    assert "eval.critic.steps=auto on cuda" in critic_steps("auto", True, cuda)[1]


@pytest.mark.parametrize("prefix", ["", "+"])
def test_the_removed_eval_images_steps_is_refused_in_one_line(
    gandiv, tmp_path: Path, tiny_run: Path, prefix: str
):
    run = _copy_run(tiny_run, tmp_path)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    result = gandiv("eval", f"run={run}", f"{prefix}eval.images.steps=5")
    assert result.code == 2, result.err
    assert result.err.splitlines() == [
        "gandiv eval: error: eval.images.steps: removed; the independent critic's updates are "
        "eval.critic.steps on image runs too (auto: 1000 on CUDA, fewer on the CPU), e.g. "
        "eval.critic.steps=200"
    ]
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written


@pytest.mark.parametrize(
    "objective",
    [
        ["objective=gan"],
        ["objective=logit_gan"],
        ["objective=fgan", "objective.divergence=kl"],
        ["objective=js_pi", "objective.pi=0.2", "objective.gradient_penalty=1.0"],
        pytest.param(["objective=reverse_kl_fgan"], marks=pytest.mark.slow),
        pytest.param(
            ["objective=fgan", "objective.divergence=pearson", "critic.spectral_norm=true"],
            marks=pytest.mark.slow,
        ),
    ],
    ids=lambda args: " ".join(args),
)
def test_every_sample_based_objective_trains_on_images(
    gandiv, tmp_path: Path, copy: Path, objective: list[str]
):
    args = images(copy, *objective, "trainer.steps=3", "plot.every=0")
    result = gandiv("train", *args)
    assert result.code == 0, result.err
    summary = read_json(only_run(tmp_path) / "summary.json")
    assert summary["status"] == "completed" and np.isfinite(summary["loss"])


def test_spread_trains_a_dcgan_with_a_convolutional_encoder(gandiv, tmp_path: Path, copy: Path):
    """Barber's spread KL on images: the noisy-data ELBO with a convolutional encoder learns
    (−ELBO in nats per image falls), and eval reports the importance-weighted bound on the
    held-out likelihood of the spread model."""
    args = ["objective=spread", "trainer.steps=200", "trainer.lr=0.002", "trainer.log_every=20"]
    result = gandiv("train", *images(copy, *args, "plot.every=0", "objective.encoder_depth=3"))
    assert result.code == 0, result.err
    run = only_run(tmp_path)
    log = (run / "train.log").read_text()
    assert "ignored: objective.encoder_depth=3 (the convolutional encoder's depth" in log
    lines = (run / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in lines]
    assert len(losses) == 10 and np.isfinite(losses).all()
    # measured: 5394 at step 20, 806 at step 200 (16×16×3 pixels, σ = 0.1)
    assert losses[-1] < 0.3 * losses[0]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    # (μ, s) for latent_dim 16 from the 4×4 maps of an encoder as wide as the generator (8, 16)
    assert state["objective"]["encoder.head.weight"].shape == (2 * 16, 2 * 8, 4, 4)
    assert (run / "figures" / "samples.png").is_file()

    result = gandiv("eval", f"run={run}", *EVAL_TINY, "eval.images.nll_images=4")
    assert result.code == 0, result.err
    report = read_json(run / "eval.json")
    assert "upper bound" in report["heldout_nll_reason"]
    assert "of 4 held-out points" in report["heldout_nll_reason"]
    # the bound on held-out faces lies near the final training loss (measured 877 vs 806)
    assert 0.5 * losses[-1] < report["heldout_nll"] < 2.0 * losses[-1]
    assert (run / "figures" / "eval_reconstructions.png").stat().st_size > 0


MMD_TINY = ["objective=mmd", "objective.feature_width=8"]


def test_an_image_mmd_run_trains_on_fixed_random_features_and_evaluates(
    gandiv, tmp_path: Path, copy: Path
):
    """objective=mmd on images: kernels on a frozen random DCGAN feature map drawn from
    objective.feature_seed (the same for every trainer.seed, unchanged by training, in no
    optimiser), bandwidths from the median feature distance of the first batch."""
    from gandiv.models.dcgan import DCGANFeatures, DCGANGenerator

    runs = {}
    for seed, steps in ((0, 20), (1, 2)):
        out = tmp_path / f"seed{seed}"
        args = images(copy, *MMD_TINY, f"trainer.steps={steps}", "plot.every=10")
        started = time.perf_counter()
        result = gandiv("train", *args, f"trainer.seed={seed}", f"hydra.run.dir={out}")
        assert result.code == 0, result.err
        print(f"\n{steps}-step {SIZE}×{SIZE} mmd run: {time.perf_counter() - started:.2f} s")
        runs[seed] = out
    run = runs[0]
    for name in ("metrics.jsonl", "checkpoints/last.pt", "figures/samples.png", "samples.npy"):
        assert (run / name).is_file(), name
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert np.isfinite(summary["loss"]) and "critic_loss" not in summary
    states = {
        s: torch.load(p / "checkpoints" / "last.pt", weights_only=True) for s, p in runs.items()
    }
    drawn = DCGANFeatures(8, SIZE, 3, seed=0).state_dict()
    for state in states.values():
        assert set(state["objective"]) == {"scale"} | {f"features.{k}" for k in drawn}
        for key, value in drawn.items():  # trained or not, whatever trainer.seed
            assert torch.equal(state["objective"][f"features.{key}"], value), key
        assert state["critic_optimizer"] is None
        (group,) = state["optimizer"]["param_groups"]  # the generator's parameters only
        assert len(group["params"]) == len(list(DCGANGenerator(16, 8, SIZE).parameters()))
    assert float(states[0]["objective"]["scale"]) > 0
    assert float(states[0]["objective"]["scale"]) != float(states[1]["objective"]["scale"])

    result = gandiv("eval", f"run={run}", *EVAL_TINY)
    assert result.code == 0, result.err
    report = read_json(run / "eval.json")
    assert report["step"] == 20 and report["n_test"] == COUNTS["test"]
    assert np.isfinite(report["independent_critic"]["js"]["estimate"])
    assert (run / "figures" / "eval_samples.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=mlp"], "model: model=mlp is for vectors, not dataset=celeba; use model= one"),
        (["critic=mlp"], "critic: critic=mlp is for vectors, not dataset=celeba; use critic="),
        (["objective=forward_kl"], "objective: objective=forward_kl needs densities, which"),
        (["objective=reverse_kl"], "objective: objective=reverse_kl needs densities"),
        (["objective=direct"], "objective: objective=direct needs densities"),
        (["dataset.size=48"], "dataset.size: must be a power of two (the DCGAN shapes), got 48"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_impossible_image_combinations_are_refused(
    gandiv, tmp_path: Path, copy: Path, args: list[str], message: str
):
    result = gandiv("train", *images(copy, "objective=gan"), *args)
    assert result.code == 2
    assert result.err.count("\n") == 1 and message in result.err, result.err
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.pt"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=dcgan", "objective=gan"], "model: model=dcgan generates images, not vector"),
        (["model=mlp", "objective=gan", "critic=dcgan"], "critic: critic=dcgan is for images"),
        (
            ["objective=mmd", "objective.features=random_conv"],
            "objective.features: random_conv is a convolutional feature map for images, not "
            "vector (toy) data; use objective.features=auto or data",
        ),
    ],
)
def test_image_networks_are_refused_on_vector_data(gandiv, args: list[str], message: str):
    result = gandiv("train", *args)
    assert result.code == 2 and result.err.count("\n") == 1 and message in result.err


class _Linear(nn.Module):
    """V(x) = ⟨w, x⟩ over every pixel: ∇_x V = w, so the R1 penalty is γ/2 ‖w‖²."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


def test_the_r1_penalty_sums_over_every_pixel_of_an_image():
    shape = (3, 4, 4)
    gamma = 2.0
    critic = _Linear(shape)
    model = type("M", (), {"sample": lambda self, n, g: torch.zeros(n, *shape)})()
    batch = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    plain = VariationalDivergence("gan", critic, get_divergence("gan"), "nonsaturating")
    penalised = VariationalDivergence(
        "gan", critic, get_divergence("gan"), "nonsaturating", gradient_penalty=gamma
    )
    generator = torch.Generator().manual_seed(2)
    without, _ = plain.critic_loss(model, batch, generator)  # type: ignore[arg-type]
    with_r1, _ = penalised.critic_loss(model, batch, generator)  # type: ignore[arg-type]
    expected = 0.5 * gamma * critic.w.detach().pow(2).sum()
    torch.testing.assert_close(with_r1 - without, expected)


def test_the_image_options_compose_validate_and_build():
    from hydra import compose, initialize_config_module

    from gandiv import config as C
    from gandiv.build import build_critic, build_dataset, build_model, check_combination

    overrides = ["dataset=celeba", "dataset.root=x", "model=dcgan", "critic=dcgan", "objective=gan"]
    with initialize_config_module("gandiv.conf", version_base="1.3"):
        cfg = C.validate_train_config(compose("train", overrides=overrides))
    data = build_dataset(cfg.dataset)  # the copy is read only when loaded
    check_combination(cfg.objective, cfg.model, data, critic=cfg.critic)
    model = build_model(cfg.model, data.dim, 64)
    x = model.sample(2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 64, 64) and data.dim == 3 * 64 * 64
    assert build_critic(cfg.critic, data.dim, 64)(x).shape == (2,)


def test_a_bf16_image_run_on_the_cpu_stays_close_to_float32(gandiv, tmp_path: Path, copy: Path):
    """trainer.precision=bf16 autocasts the step's networks on the CPU too: the losses of the
    first steps move by bf16's rounding (about 0.4 % per operator), not by more."""
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = images(copy, "objective=ns_gan", "trainer.steps=3", "trainer.log_every=1")
        result = gandiv(
            "train", *args, "plot.every=0", f"trainer.precision={precision}", f"hydra.run.dir={out}"
        )
        assert result.code == 0, result.err
        assert read_json(out / "summary.json")["precision"] == precision
        records = (out / "metrics.jsonl").read_text().splitlines()
        losses[precision] = np.array(
            [[r["loss"], r["critic_loss"]] for r in map(json.loads, records)]
        )
    assert losses["bf16"].shape == (3, 2) and np.isfinite(losses["bf16"]).all()
    assert not np.array_equal(losses["bf16"], losses["fp32"])  # autocast did change the step
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=0.05)


@pytest.mark.parametrize("objective", [["objective=ns_gan"], MMD_TINY], ids=["ns_gan", "mmd"])
def test_an_interrupted_image_run_resumes_to_the_uninterrupted_metrics(
    gandiv, tmp_path: Path, copy: Path, objective: list[str]
):
    """A DCGAN run stopped at step 6 (its checkpoint) and resumed ends as one never stopped:
    the same metrics.jsonl (less time_s) and the same parameters, BatchNorm statistics too (mmd:
    the kernel's median scale is the one measured at step 1, not measured again)."""
    args = images(copy, *objective, "trainer.log_every=3", "trainer.checkpoint_every=6")
    whole, part = tmp_path / "whole", tmp_path / "part"
    result = gandiv("train", *args, "trainer.steps=12", "plot.every=6", f"hydra.run.dir={whole}")
    assert result.code == 0, result.err
    result = gandiv("train", *args, "trainer.steps=6", "plot.every=6", f"hydra.run.dir={part}")
    assert result.code == 0, result.err
    result = gandiv("train", f"resume={part}", "trainer.steps=12")
    assert result.code == 0, result.err
    assert [r["step"] for r in metrics_without_time(part)] == [3, 6, 9, 12]
    assert metrics_without_time(part) == metrics_without_time(whole)
    resumed, uninterrupted = final_model_state(part), final_model_state(whole)
    assert any("running_var" in k for k in resumed)
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key
    states = [torch.load(r / "checkpoints" / "last.pt", weights_only=True) for r in (part, whole)]
    assert states[0]["objective"].keys() == states[1]["objective"].keys()
    for key, value in states[1]["objective"].items():
        assert torch.equal(states[0]["objective"][key], value), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("on_device", "objective"),
    [("true", "ns_gan"), ("false", "ns_gan"), ("true", "spread")],
)
def test_an_image_run_on_cuda_trains_in_bf16_with_cudnn_autotuning(
    gandiv, tmp_path: Path, copy: Path, on_device: str, objective: str
):
    args = images(copy, f"objective={objective}", "trainer.steps=6", "plot.every=0")
    result = gandiv("train", *args, "trainer.device=cuda", f"dataset.on_device={on_device}")
    assert result.code == 0, result.err
    summary = read_json(only_run(tmp_path) / "summary.json")
    assert summary["status"] == "completed" and np.isfinite(summary["loss"])
    assert summary["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert torch.backends.cudnn.benchmark
