"""Every random state a run holds is saved and restored: a task reloaded from its training state
draws exactly what the original draws next (batches, latents, the critic's fakes, torch's
global stream), and its networks and optimisers are the original's."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from gandiv.data.splits import ToySplits
from gandiv.data.toy import Mixture
from gandiv.divergences import get_divergence
from gandiv.models import GaussianModel, MLPCritic
from gandiv.objectives.adversarial import VariationalDivergence
from gandiv.training.loop import RunTask
from gandiv.training.run_dir import RunDirectory

DATA = Mixture.isotropic([0.3, 0.7], [[-2.0, 0.0], [1.5, 0.5]], [0.5, 1.0])


def make_task(tmp_path: Path, seed: int) -> RunTask:
    torch.manual_seed(seed)
    model = GaussianModel(2)
    objective = VariationalDivergence("gan", MLPCritic(2, 16, 2), get_divergence("gan"), "minimax")
    return RunTask(
        run=RunDirectory(tmp_path),
        # n_train=None: each batch a fresh sample, drawn in chunks kept until used
        splits=ToySplits(DATA, None, 100, seed=0),
        model=model,
        objective=objective,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        critic_optimizer=torch.optim.Adam(objective.critic_parameters(), lr=0.01),
        generator=torch.Generator().manual_seed(seed),
        evaluate=None,
        config={},
    )


def steps(task: RunTask, n: int) -> list[torch.Tensor]:
    """`n` training steps as the loop takes them; every number drawn along the way."""
    drawn = []
    for _ in range(n):
        batch = task.splits.batch(64, task.generator)
        critic_loss, _ = task.objective.critic_loss(task.model, batch, task.generator)
        task.critic_optimizer.zero_grad()
        critic_loss.backward()
        task.critic_optimizer.step()
        loss = task.objective.model_loss(
            task.model, task.splits.batch(64, task.generator), task.generator
        )
        task.optimizer.zero_grad()
        loss.backward()
        task.optimizer.step()
        drawn += [batch, critic_loss.detach(), loss.detach(), torch.rand(3)]  # torch's own stream
    return drawn


def test_a_task_reloaded_from_its_training_state_draws_what_the_original_draws(
    tmp_path: Path,
) -> None:
    original = make_task(tmp_path, seed=1)
    steps(original, 5)
    saved = io.BytesIO()  # through bytes, as a checkpoint (the state's tensors are the live ones)
    torch.save(original.training_state(), saved)
    expected = steps(original, 5)
    reloaded = make_task(tmp_path, seed=2)  # other weights, other streams
    saved.seek(0)
    reloaded.load(torch.load(saved, weights_only=False))
    got = steps(reloaded, 5)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    for (name, p), q in zip(
        original.model.state_dict().items(), reloaded.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name


def test_the_training_state_names_every_random_stream() -> None:
    # what `load` restores besides the networks: a new random state must be added to both
    state = make_task(Path("."), seed=0).training_state()
    assert {"generator", "torch_rng", "splits"} <= set(state)
