"""Wall time of `gandiv eval` on a tiny CelebA-layout run at 64×64: the independent critics'
budget at its default (`eval.critic.steps=auto`) against one update per critic, and from the two
the cost of an update and the wall time the former default (1,000 updates per critic) takes.

The data are the tests' tiny CelebA copy (`tests/celeba_copy.py`: 36 face-like JPEGs, 6 in the
test partition) at the dataset's default 64×64; the run is 10 `ns_gan` steps of the default DCGAN
generator and critic (width 64), so `gandiv eval` trains the default DCGAN critic. Each round
times both evaluations (on the CPU) as whole processes, alternately.
`python benchmarks/bench_image_eval.py --rounds 2`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.celeba_copy import make_copy, write_faces  # noqa: E402

from gandiv.commands.evaluate import CPU_IMAGE_CRITIC_STEPS  # noqa: E402

OLD_DEFAULT = 1000  # eval.images.steps before eval.critic.steps applied to images


def gandiv(*args: str, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gandiv", *args], cwd=cwd, check=True, capture_output=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        make_copy(write_faces(tmp / "faces"), tmp / "data", "torchvision")
        run = tmp / "run"
        train = [
            "dataset=celeba",
            f"dataset.root={tmp / 'data'}",
            "dataset.workers=0",
            "model=dcgan",
            "critic=dcgan",
            "objective=ns_gan",
            "trainer.steps=10",
            "trainer.batch_size=16",
            "plot.every=0",
            f"hydra.run.dir={run}",
        ]
        gandiv("train", *train, cwd=tmp)
        times: dict[str, list[float]] = {"auto": [], "1": []}
        for _ in range(args.rounds):
            for steps in times:
                times[steps].append(
                    gandiv(
                        "eval", f"run={run}", "device=cpu", f"eval.critic.steps={steps}", cwd=tmp
                    )
                )
        report = json.loads((run / "eval.json").read_text())
    auto = CPU_IMAGE_CRITIC_STEPS
    t_auto, t_one = statistics.median(times["auto"]), statistics.median(times["1"])
    per_update = (t_auto - t_one) / (2 * (auto - 1))
    old = t_one + 2 * (OLD_DEFAULT - 1) * per_update
    print(f"n_test {report['n_test']}; auto on this CPU: {auto} updates per critic")
    print(f"eval, 1 update per critic: {t_one:.1f} s (rounds: {times['1']})")
    print(f"eval, auto ({auto}):        {t_auto:.1f} s (rounds: {times['auto']})")
    print(f"one critic update: {per_update:.2f} s")
    print(
        f"eval at {OLD_DEFAULT} updates per critic (estimated): {old:.0f} s; auto / that: "
        f"{t_auto / old:.3f}"
    )


if __name__ == "__main__":
    main()
