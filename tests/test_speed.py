"""trainer.precision and trainer.compile: autocast of the step, networks compiled in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from gandiv.errors import UserError
from gandiv.models import CouplingFlow, GaussianModel, MLPGenerator
from gandiv.models.mlp import MLPCritic
from gandiv.training.speed import StepPrecision, compile_networks, resolve_precision

from .conftest import TINY, final_model_state, metrics_without_time


def test_auto_precision_is_bf16_on_cuda_and_fp32_on_the_cpu():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert resolve_precision("auto", torch.device("cuda")) == "bf16"


@pytest.mark.parametrize(("name", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_step_autocasts_networks_but_critics_return_float32(name: str, dtype: torch.dtype):
    layer = nn.Linear(4, 3)
    critic = MLPCritic(4, width=8, depth=1)
    x = torch.randn(5, 4)
    with StepPrecision(name, torch.device("cpu")).autocast():
        assert layer(x).dtype == dtype
        assert critic(x).dtype == torch.float32  # the losses are reduced in float32


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UserError, match=r"trainer\.precision: bf16 needs a GPU with bfloat16"):
        resolve_precision("bf16", torch.device("cuda"))


def test_compiling_keeps_the_networks_state_dict_keys():
    model = MLPGenerator(2, latent_dim=2, width=8, depth=1)
    keys = list(model.state_dict())
    assert compile_networks(model) == ["MLPGenerator.net"]
    assert list(model.state_dict()) == keys


def test_the_networks_inside_other_modules_are_compiled_and_parameters_alone_are_not():
    flow = CouplingFlow(2, depth=2, width=8, hidden_layers=1)  # sampled forward, scored inverse
    assert compile_networks(flow) == ["CouplingFlow.layers.0.net", "CouplingFlow.layers.1.net"]
    assert compile_networks(GaussianModel(2)) == []  # a mean and a scale: nothing to compile


GAN = ["model=mlp", "objective=ns_gan", "model.width=16", "critic.width=16", "plot.every=0"]


@pytest.mark.slow
def test_a_compiled_run_matches_an_uncompiled_one_and_resumes(gandiv, tmp_path: Path):
    """trainer.compile=true (inductor, about 15 s to compile here): the same losses to float
    tolerance, a checkpoint with the plain keys, and a resume that may switch compilation off."""
    runs = {}
    for flag in ("false", "true"):
        runs[flag] = tmp_path / f"compile-{flag}"
        args = [*TINY, *GAN, "trainer.steps=20", "trainer.eval_every=0"]
        result = gandiv("train", *args, f"trainer.compile={flag}", f"hydra.run.dir={runs[flag]}")
        assert result.code == 0, result.err
    plain, compiled = (metrics_without_time(runs[f]) for f in ("false", "true"))
    assert [r["step"] for r in compiled] == [r["step"] for r in plain] == [10, 20]
    for a, b in zip(plain, compiled, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    state = final_model_state(runs["true"])
    assert list(state) == list(final_model_state(runs["false"]))
    result = gandiv("train", f"resume={runs['true']}", "trainer.steps=25", "trainer.compile=false")
    assert result.code == 0, result.err
    assert metrics_without_time(runs["true"])[-1]["step"] == 25
