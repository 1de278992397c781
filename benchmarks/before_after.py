"""The training step of this checkout against an earlier commit's, side by side in one run.

For each of the profile's shapes (train_step.PROFILE_SHAPES: paper-moe's and the frontiers'),
each version's own `moelab.training.train` runs the same config in a process of its own, the
earlier commit's from a temporary git worktree, taking turns. Its `on_step` callback (the same in
both) stamps every step with the wall clock and the process's CPU time; the step time is the
median interval between stamps after the first --skip steps (start-up, the first steps and
compiling stay out), in wall and in CPU time. On a machine that other processes share, the wall
time includes the time they held the core and the CPU time does not. Variants:

    before        the earlier commit, the config as the presets ran it (eager)
    now           this checkout, the same config
    now, compiled this checkout with train.compile = true (and, for hash-routed shapes,
                  model.moe.dispatch = "gather", the expert path that compiles into the graph)

Speed-ups are per round (before / now on the same round's runs) and the median over rounds, with
their range. Runs train a small knowledge base (the step's shape does not depend on the number of
people), one thread each. Both run in this environment, so the earlier commit's own imports must be
installed (3e43299, the commit before issue 29, imports tomli-w).

    python benchmarks/before_after.py --before 3e43299 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from moelab.io import toml_dumps
from moelab.provenance import cpu_model
from moelab.sweeps.grid import set_path
from train_step import PROFILE_SHAPES

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = 320  # 10 steps an exposure at batch 32


def config(fields: dict, exposures: int, compiled: bool) -> dict:
    """A run config both versions read: the tiny-dense preset (the same file in both), the
    shape's fields over it, and the schedule."""
    data = tomllib.loads((ROOT / "src/moelab/presets/tiny-dense.toml").read_text()) | {"name": "before-after"}
    schedule = {"data.n_people": PEOPLE, "train.exposures": exposures, "train.threads": 1}
    for path, value in (fields | schedule).items():
        set_path(data, path, value)
    if compiled:
        data["train"]["compile"] = True
        if fields.get("model.moe.router") == "hash":
            data["model"]["moe"]["dispatch"] = "gather"
    return data


DRIVER = """
import json, sys, time, torch
from moelab.config import load_config
from moelab.knowledge import build_knowledge_base
from moelab.models import Transformer
from moelab.training import train
cfg = load_config(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(cfg.seed)
kb = build_knowledge_base(cfg.data)
model = Transformer(cfg.model, len(kb.vocab))
stamps = []
train(model, kb, cfg.train, cfg.seed, torch.device("cpu"),
      on_step=lambda *_: stamps.append((time.perf_counter(), time.process_time())))
print(json.dumps(stamps))
"""


def step_ms(source: Path, cfg: dict, folder: Path, skip: int) -> dict[str, float]:
    """Train `cfg` with the moelab under `source`/src; the median wall and CPU ms between steps
    after `skip`."""
    folder.mkdir(parents=True)
    path = folder / "config.toml"
    path.write_text(toml_dumps(cfg))
    env = os.environ | {"PYTHONPATH": str(source / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(path)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training under {source} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    stamps = json.loads(done.stdout.strip().splitlines()[-1])[skip:]
    return {clock: 1e3 * statistics.median(b[i] - a[i] for a, b in zip(stamps, stamps[1:]))
            for i, clock in enumerate(("wall", "CPU"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit (e.g. the one before an issue)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--exposures", type=int, default=20, help="of 320 people: 10 steps each")
    parser.add_argument("--skip", type=int, default=50, help="steps left out at the start")
    parser.add_argument("--shapes", default=",".join(PROFILE_SHAPES))
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in PROFILE_SHAPES]
    if unknown:
        raise SystemExit(f"--shapes: unknown {unknown[0]!r}; the shapes are {', '.join(PROFILE_SHAPES)}")

    variants = {"before": False, "now": False, "now, compiled": True}
    times: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(before), args.before],
                       check=True, capture_output=True)
        try:
            for r in range(args.rounds):
                for shape in shapes:
                    for variant, compiled in variants.items():
                        source = before if variant == "before" else ROOT
                        cfg = config(PROFILE_SHAPES[shape], args.exposures, compiled)
                        folder = Path(tmp) / f"r{r}" / shape.replace(" ", "_") / variant.replace(", ", "_")
                        times.setdefault((shape, variant), []).append(step_ms(source, cfg, folder, args.skip))
                        last = times[shape, variant][-1]
                        print(f"round {r + 1}, {shape}, {variant}: {last['wall']:.2f} ms/step ({last['CPU']:.2f} "
                              "CPU)", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)

    steps = args.exposures * PEOPLE // 32
    for clock in ("wall", "CPU"):  # CPU time leaves out the time other processes held the core
        print(f"\n{cpu_model()}, one thread; {args.before} against this checkout; median {clock} ms between fp32 "
              f"steps {args.skip + 1}-{steps} of a run, median of {args.rounds} round(s); speed-ups with their range "
              "over rounds")
        print(f"{'shape':34} {'before':>8} {'now':>8} {'compiled':>9} | {'now':>16} {'compiled':>16}")
        for shape in shapes:
            ms = {v: [t[clock] for t in times[shape, v]] for v in variants}
            ratios = {v: [b / t for b, t in zip(ms["before"], ms[v])] for v in ("now", "now, compiled")}
            cells = [f"{statistics.median(r):.2f} [{min(r):.2f}, {max(r):.2f}]" for r in ratios.values()]
            print(f"{shape:34} {statistics.median(ms['before']):>8.2f} {statistics.median(ms['now']):>8.2f} "
                  f"{statistics.median(ms['now, compiled']):>9.2f} | {cells[0]:>16} {cells[1]:>16}")


if __name__ == "__main__":
    main()
