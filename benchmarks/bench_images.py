"""Images per second of DCGAN G+D training: gandiv's loop against a plain PyTorch reference loop,
and both against the hardware's FLOP-rate bound.

For each batch size, at 64×64 with DCGAN width 64 and latent 100 (`+experiment=celeba_dcgan`):

- **gandiv**: the preset's config (Hydra's compose, the same validation and builders as
  `gandiv train`, `trainer.precision=auto`: bf16 on CUDA) trained by gandiv's own loop on
  in-memory uint8 images (`ImageSplits`, on the GPU when there is one); images/s from the loop's
  own training time (checkpoints excluded). `--set KEY=VALUE` adds overrides, e.g.
  `--set model.channels_last=true --set critic.channels_last=true --set trainer.compile=true`.
- **reference**: the canonical DCGAN step as pytorch/examples writes it (Sigmoid D, BCELoss, D on
  real then on fake, the G step reusing the D step's fakes, Adam 2e-4/(0.5, 0.999), `.item()` of
  both losses every step), float32, on the same uint8 images on the same device.
- **bound**: FLOPs per image of gandiv's step (counted by `torch.utils.flop_counter`: the
  convolutions forward and backward) against the device's rate: on CUDA the bf16 dense peak of
  the datasheet for known GPUs (`--peak-tflops` otherwise) and the measured bf16 matmul rate; on
  a CPU the faster of the measured float32 matmul and convolution rates.

The loops run interleaved in rounds, so noise hits both alike. CPU (minutes):
`python benchmarks/bench_images.py --rounds 2 --seconds 5`; CUDA: `python
benchmarks/bench_images.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench_gan import steps_of, task_of
from gandiv import config as C
from gandiv.build import build_dataset, build_model, build_objective
from gandiv.data.celeba import CelebA
from gandiv.data.images import ImageData, ImageSplits
from gandiv.training.speed import StepPrecision, compile_networks, resolve_precision, tune_device

SIZE, WIDTH, LATENT = 64, 64, 100
IMAGES = 4096  # distinct random uint8 images to draw batches from
# bf16 dense tensor-core peaks (TFLOP/s) from the vendors' datasheets, by device name
PEAK_BF16_TFLOPS = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}

Loop = Callable[[int], float]  # run `steps` steps, return the seconds they took


def random_images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (IMAGES, SIZE, SIZE, 3), dtype=np.uint8)


def gandiv_loop(batch: int, device: torch.device, overrides: list[str]) -> Loop:
    """gandiv's loop on the celeba_dcgan preset (objects kept between calls)."""
    settings = ["+experiment=celeba_dcgan", "dataset.root=unused", f"trainer.batch_size={batch}"]
    with initialize_config_module("gandiv.conf", version_base="1.3"):
        config = C.validate_train_config(compose("train", overrides=[*settings, *overrides]))
    data = build_dataset(config.dataset)
    assert isinstance(data, ImageData)
    trainer = config.trainer
    torch.manual_seed(0)
    model = build_model(config.model, data.dim, data.size).to(device)
    objective = build_objective(config.objective, data, config.critic, None, model=model).to(device)
    precision = StepPrecision(resolve_precision(trainer.precision, device), device)
    tune_device(device)
    if trainer.compile:
        compile_networks(model, objective)
    copy = CelebA(
        images=random_images(),
        splits={"train": (0, IMAGES), "test": (0, 0)},
        names=[],
        layout=None,  # type: ignore[arg-type]
        cache_path=Path(),
        header={},
    )
    splits = ImageSplits(copy, device, data.on_device)
    task = task_of(config, model, objective, splits, torch.Generator(device=device).manual_seed(0))
    loop = steps_of(
        task,
        critic_steps=trainer.critic_steps,
        batch_size=batch,
        log_every=trainer.log_every,
        autocast=precision.autocast,
    )
    return lambda steps: loop(steps).session_train_time_s


def _reference_networks(nz: int, ngf: int, ndf: int) -> tuple[nn.Module, nn.Module]:
    """pytorch/examples' DCGAN generator and discriminator for 64×64 RGB."""
    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * 8),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 4),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    netD = nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 8),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )
    return netG, netD


def reference_loop(batch: int, device: torch.device) -> Loop:
    """The canonical DCGAN training step (pytorch/examples dcgan/main.py), written by hand."""
    torch.manual_seed(0)
    netG, netD = (net.to(device) for net in _reference_networks(LATENT, WIDTH, WIDTH))
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    images = torch.from_numpy(random_images()).to(device)
    real_label = torch.full((batch,), 1.0, device=device)
    fake_label = torch.full((batch,), 0.0, device=device)

    def run(steps: int) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            index = torch.randint(IMAGES, (batch,), device=device)
            real = images[index].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            # D: maximise log D(x) + log(1 − D(G(z)))
            netD.zero_grad()
            errD_real = criterion(netD(real).view(-1), real_label)
            errD_real.backward()
            fake = netG(torch.randn(batch, LATENT, 1, 1, device=device))
            errD_fake = criterion(netD(fake.detach()).view(-1), fake_label)
            errD_fake.backward()
            optimizerD.step()
            # G: maximise log D(G(z))
            netG.zero_grad()
            errG = criterion(netD(fake).view(-1), real_label)
            errG.backward()
            optimizerG.step()
            (errD_real + errD_fake).item(), errG.item()  # logged every step
        return time.perf_counter() - started

    return run


def flops_per_image(run: Loop, batch: int) -> float:
    """Convolution and matmul FLOPs of one training step, forward and backward, per image."""
    with FlopCounterMode(display=False) as counter:
        run(1)
    return counter.get_total_flops() / batch


def _timed_rate(
    op: Callable[[], object], flops: float, device: torch.device, seconds: float
) -> float:
    for _ in range(3):
        op()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            op()
        count += 10
        if device.type == "cuda":
            torch.cuda.synchronize()
    return flops * count / (time.perf_counter() - started)


def measured_rate(device: torch.device, batch: int, seconds: float = 1.0) -> tuple[float, float]:
    """Measured FLOP/s of a square matmul and of the step's largest convolution (D's second
    layer), in the step's compute dtype (bf16 on CUDA, float32 on a CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    mm = _timed_rate(lambda: a @ a, 2.0 * n**3, device, seconds)
    x = torch.randn(batch, WIDTH, SIZE // 2, SIZE // 2, device=device, dtype=dtype)
    w = torch.randn(2 * WIDTH, WIDTH, 4, 4, device=device, dtype=dtype)
    out = (SIZE // 4) ** 2 * 2 * WIDTH
    conv_flops = 2.0 * batch * out * WIDTH * 16
    conv = _timed_rate(lambda: F.conv2d(x, w, stride=2, padding=1), conv_flops, device, seconds)
    return mm, conv


def datasheet_peak(device: torch.device, override: float | None) -> float | None:
    """The bf16 dense peak (FLOP/s) of this GPU, from `--peak-tflops` or the table."""
    if override is not None:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    matches = [tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name]
    return matches[0] * 1e12 if matches else None


def images_per_s(run: Loop, batch: int, seconds: float) -> float:
    """Images per second over about `seconds` of steps (at least 2), after one unmeasured
    step (warm-up: cuDNN's autotuning, compilation)."""
    probe = run(1)
    steps = max(int(seconds / max(probe, 1e-9)), 2)
    return steps * batch / run(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak")
    parser.add_argument("--set", action="append", default=[], help="a gandiv override")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"median of {args.rounds} rounds, gandiv overrides: {' '.join(args.set) or 'none'}"
    )
    peak = datasheet_peak(device, args.peak_tflops)
    header = (
        "| batch | reference img/s | gandiv img/s | gandiv / reference | GFLOP per image "
        "(gandiv, reference) | bound img/s | gandiv / bound |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    rates = []
    for batch in args.batches:
        loops = {
            "reference": reference_loop(batch, device),
            "gandiv": gandiv_loop(batch, device, args.set),
        }
        flops = {n: flops_per_image(run, batch) for n, run in loops.items()}
        measured: dict[str, list[float]] = {n: [] for n in loops}
        for round_ in range(args.rounds):
            for n in loops if round_ % 2 == 0 else reversed(list(loops)):
                measured[n].append(images_per_s(loops[n], batch, args.seconds))
        mm, conv = measured_rate(device, batch)
        rates.append((batch, mm, conv))
        rate = peak if peak is not None else max(mm, conv)
        bound = rate / flops["gandiv"]
        ref, ours = (statistics.median(measured[n]) for n in ("reference", "gandiv"))
        spread = f"{min(measured['gandiv']):.0f}–{max(measured['gandiv']):.0f}"
        print(
            f"| {batch} | {ref:.0f} | {ours:.0f} ({spread}) | {ours / ref:.2f} | "
            f"{flops['gandiv'] / 1e9:.2f}, {flops['reference'] / 1e9:.2f} | {bound:.0f} | "
            f"{ours / bound:.3f} |"
        )
    what = "bf16" if device.type == "cuda" else "float32"
    for batch, mm, conv in rates:
        print(
            f"measured {what} rate (batch {batch}): matmul {mm / 1e12:.3f} TFLOP/s, "
            f"convolution {conv / 1e12:.3f} TFLOP/s"
        )
    if peak is not None:
        print(f"bound from the bf16 dense peak: {peak / 1e12:.1f} TFLOP/s")


if __name__ == "__main__":
    main()
