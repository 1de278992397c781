"""What a fresh process pays before it trains: the import of `moelab.run` (every sweep worker, each
`moelab train`, each test that starts a process), against the same import with scipy.stats added,
interleaved in fresh interpreters.

    python benchmarks/startup.py [--repeats 7]

Prints the median seconds of each, their ratio, and whether `import moelab.run` alone pulls in
scipy.stats (it should not: the lab's intervals use the standard library's normal quantile, and
analysis.fit imports scipy where a fit needs it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from moelab.provenance import cpu_model

IMPORTS = {
    "moelab.run": "import moelab.run",
    "moelab.run + scipy.stats": "import moelab.run, scipy.stats",
}


def seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    seconds("import moelab.run")  # warm the file cache
    times: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for _ in range(args.repeats):
        for name, code in IMPORTS.items():
            times[name].append(seconds(code))
    loaded = subprocess.run([sys.executable, "-c", "import sys, moelab.run; print('scipy.stats' in sys.modules)"],
                            check=True, capture_output=True, text=True).stdout.strip()
    print(f"{cpu_model()}, {args.repeats} fresh interpreters each, interleaved")
    base = statistics.median(times["moelab.run"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28s} {median:6.2f} s  ({median / base:.2f}x)")
    print(f"import moelab.run loads scipy.stats: {loaded}")


if __name__ == "__main__":
    main()
