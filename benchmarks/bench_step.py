"""gandiv's training step against a plain PyTorch loop with the same shapes, side by side.

Both fit a full-covariance Gaussian to the default 2-D mixture by maximum likelihood (Adam,
batch 512). The reference is what a careful user would write by hand with torch.distributions:
sample the data, MultivariateNormal(loc, scale_tril).log_prob, `.item()` each step for logging.
The two are interleaved in rounds so machine noise hits both alike; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gandiv.data.splits import ToySplits
from gandiv.data.toy import Mixture
from gandiv.models import GaussianModel
from gandiv.objectives.likelihood import ForwardKL

BATCH = 512


def gandiv_step() -> tuple[object, ...]:
    data = Mixture.isotropic([0.5, 0.5], [[-2.0, -1.0], [2.0, 1.0]], [0.6, 0.6])
    splits = ToySplits(data, None, 2, 0)
    model, objective = GaussianModel(2), ForwardKL()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = objective.model_loss(model, splits.batch(BATCH, generator), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return (step,)


def reference_step() -> tuple[object, ...]:
    means = torch.tensor([[-2.0, -1.0], [2.0, 1.0]])
    loc = torch.zeros(2, requires_grad=True)
    raw = torch.eye(2, requires_grad=True)
    optimizer = torch.optim.Adam([loc, raw], lr=0.01)

    def step() -> None:
        component = torch.randint(0, 2, (BATCH,))
        x = means[component] + 0.6 * torch.randn(BATCH, 2)
        scale_tril = torch.tril(raw, -1) + torch.diag(torch.nn.functional.softplus(raw.diagonal()))
        q = torch.distributions.MultivariateNormal(loc, scale_tril=scale_tril)
        loss = -q.log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    return (step,)


def steps_per_second(step, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (ours,), (ref,) = gandiv_step(), reference_step()
    for step in (ours, ref):  # warm up
        steps_per_second(step, 0.2)
    ratios, ours_rates, ref_rates = [], [], []
    for _ in range(args.rounds):
        a, b = steps_per_second(ours, args.seconds), steps_per_second(ref, args.seconds)
        ours_rates.append(a)
        ref_rates.append(b)
        ratios.append(a / b)
    print(f"maximum-likelihood Gaussian step, 2-D mixture, batch {BATCH}, {args.threads} thread(s)")
    print(f"  gandiv     {statistics.median(ours_rates):9.0f} steps/s")
    print(f"  reference  {statistics.median(ref_rates):9.0f} steps/s")
    print(
        f"  ratio gandiv/reference: median {statistics.median(ratios):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f}, {args.rounds} interleaved rounds)"
    )


if __name__ == "__main__":
    main()
