"""The training step with and without allocator.reuse_freed_memory, side by side in one run.

Each of train_step.PROFILE_SHAPES (paper-moe's and the frontiers' shapes) and frontier v3's
widest shapes trains in a process of its own with `moelab.training.train` (one thread), once as
moelab runs it and once with `reuse_freed_memory` replaced by a no-op (glibc's own behaviour),
taking turns. Between steps --skip and --skip + --steps it reads the process's minor page faults,
system and CPU time (getrusage, process_time) and wall time, and it prints the loss at the last
step: the two must be equal, because only where memory comes from changes.

    python benchmarks/allocator.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from before_after import PEOPLE, config
from moelab.allocator import USER_SETTINGS
from moelab.io import toml_dumps
from moelab.provenance import cpu_model
from train_step import ONE_LAYER, PROFILE_SHAPES

SHAPES = PROFILE_SHAPES | {
    "frontier-v3 dense d_ff 1024": ONE_LAYER | {"model.d_ff": 1024},
    "frontier-v3 4 experts w1536 stable": ONE_LAYER | {"model.moe.n_experts": 4, "model.moe.expert_width": 1536,
                                                       "model.moe.router": "stable", "model.moe.freeze_fraction": 0.1},
}

DRIVER = """
import json, resource, sys, time, torch
import moelab.training
from moelab.config import load_config
from moelab.knowledge import build_knowledge_base
from moelab.models import Transformer
cfg, glibc, first, last = load_config(sys.argv[1]), sys.argv[2] == "glibc", int(sys.argv[3]), int(sys.argv[4])
if glibc:
    moelab.training.reuse_freed_memory = lambda: False
torch.set_num_threads(1)
torch.manual_seed(cfg.seed)
kb = build_knowledge_base(cfg.data)
model = Transformer(cfg.model, len(kb.vocab))
marks = {}
def on_step(step, steps, loss):
    if step in (first, last):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        marks[step] = (usage.ru_minflt, usage.ru_stime, time.process_time(), time.perf_counter(), loss)
moelab.training.train(model, kb, cfg.train, cfg.seed, torch.device("cpu"), on_step=on_step)
(f0, s0, c0, w0, _), (f1, s1, c1, w1, loss) = marks[first], marks[last]
n = last - first
print(json.dumps({"faults": (f1 - f0) / n, "system_ms": 1e3 * (s1 - s0) / n, "cpu_ms": 1e3 * (c1 - c0) / n,
                  "wall_ms": 1e3 * (w1 - w0) / n, "loss": loss}))
"""


def measure(cfg: dict, arm: str, first: int, last: int, folder: Path) -> dict:
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(toml_dumps(cfg))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(folder / "config.toml"), arm, str(first), str(last)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", type=int, default=100, help="steps left out at the start")
    parser.add_argument("--steps", type=int, default=200, help="steps measured")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args(argv)
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"--shapes: unknown {unknown[0]!r}; the shapes are {', '.join(SHAPES)}")
    if any(os.environ.get(name) for name in USER_SETTINGS):
        raise SystemExit(f"unset {', '.join(USER_SETTINGS)}: they set the allocator for both arms")
    first, last = args.skip, args.skip + args.steps
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for shape in shapes:
                for arm in ("glibc", "moelab"):
                    folder = Path(tmp) / f"r{r}" / shape.replace(" ", "_") / arm
                    exposures = -(-(last + 1) * 32 // PEOPLE)  # enough for steps first..last
                    row = measure(config(SHAPES[shape], exposures, compiled=False), arm, first, last, folder)
                    results.setdefault((shape, arm), []).append(row)
                    print(f"round {r + 1}, {shape}, {arm}: {row['faults']:.0f} faults, {row['wall_ms']:.2f} ms/step",
                          flush=True)
    print(f"\n{cpu_model()}, one thread; steps {first + 1}-{last}, median over {args.rounds} round(s); speed-ups "
          "per round (glibc / moelab) with their range")
    print(f"{'shape':36} {'faults/step':>19} {'system ms':>13} {'CPU ms/step':>15} {'wall ms/step':>15} "
          f"{'CPU speed-up':>20} {'wall speed-up':>20} {'same loss':>9}")
    summary = {}
    for shape in shapes:
        g, m = results[shape, "glibc"], results[shape, "moelab"]
        med = {(arm, k): statistics.median(row[k] for row in rows) for arm, rows in (("g", g), ("m", m))
               for k in ("faults", "system_ms", "cpu_ms", "wall_ms")}
        ratio = {k: [a[k] / b[k] for a, b in zip(g, m)] for k in ("cpu_ms", "wall_ms")}
        same = all(a["loss"] == b["loss"] for a, b in zip(g, m))
        summary[shape] = {"same_loss": same, "faults": (med["g", "faults"], med["m", "faults"]),
                          "cpu_speedup": statistics.median(ratio["cpu_ms"]), "wall_speedup": statistics.median(ratio["wall_ms"])}
        cell = lambda k: f"{statistics.median(ratio[k]):.2f} [{min(ratio[k]):.2f}, {max(ratio[k]):.2f}]"
        print(f"{shape:36} {med['g', 'faults']:>8.0f} -> {med['m', 'faults']:>6.0f} "
              f"{med['g', 'system_ms']:>5.1f} -> {med['m', 'system_ms']:>4.1f} "
              f"{med['g', 'cpu_ms']:>6.1f} -> {med['m', 'cpu_ms']:>5.1f} {med['g', 'wall_ms']:>6.1f} -> "
              f"{med['m', 'wall_ms']:>5.1f} {cell('cpu_ms'):>20} {cell('wall_ms'):>20} {'yes' if same else 'NO':>9}")
    return summary


if __name__ == "__main__":
    main()
