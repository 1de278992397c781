"""MoE layer forward+backward: moelab's dispatch against transformers' Qwen3-MoE block (its
`grouped_mm` and `eager` expert paths, same weights, outputs checked equal) and against the dense
limit, a SwiGLU MLP of width k * expert_width (the same active FLOPs per token).

All implementations of one shape are timed in one process, interleaved repetition by repetition,
and the median is reported; the ratios are what to read (absolute times depend on the machine).

Two more timings split moelab's cost, to show where the distance to the dense limit comes from:
  experts      the expert MLPs alone (grouped GEMMs and activation, forward + backward) on T*k
               rows already sorted and spread evenly over the experts: no router, no gather, no
               scatter. What remains of "ours" is the routing.
  weight pass  one read and one write of every expert weight (a copy of the stacked weights into
               a buffer): the least memory traffic of a backward pass that writes every expert's
               weight gradient, however few rows each expert sees.

    python benchmarks/moe_layer.py                 # the CPU grid (d_model 256, 4096 tokens)
    python benchmarks/moe_layer.py --full          # the issue's whole grid (long on a CPU)
    python benchmarks/moe_layer.py --json out.json
    python benchmarks/moe_layer.py --paths         # moelab's own expert paths against each other
    python benchmarks/moe_layer.py --full --device cuda --dtype bf16   # on a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time

import torch

from moelab.config import ModelConfig, MoEConfig, RunConfig, resolve
from moelab.models.mlp import MLP
from moelab.models.moe import DISPATCH_PATHS, MoE, choose_dispatch

CPU = torch.device("cpu")

GATHER_BYTES = 256 * 2**20  # the gather path holds every row's expert weights at once


def our_layer(d: int, f: int, E: int, k: int) -> MoE:
    cfg = resolve(RunConfig(model=ModelConfig(d_model=d, n_heads=4, d_ff=f, mlp="swiglu", moe=MoEConfig(
        n_experts=E, top_k=k, expert_width=f, renormalize=k > 1))))
    return MoE(cfg.model)


def hf_block(layer: MoE, implementation: str):
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    e = layer.experts
    E, f, d = e.w_out.shape
    config = Qwen3MoeConfig(hidden_size=d, moe_intermediate_size=f, num_experts=E,
                            num_experts_per_tok=layer.cfg.top_k, norm_topk_prob=layer.cfg.renormalize,
                            hidden_act="silu")
    config._experts_implementation = implementation
    block = Qwen3MoeSparseMoeBlock(config)
    with torch.no_grad():
        block.gate.weight.copy_(layer.router.gate.weight)
        block.experts.gate_up_proj.copy_(e.w_in.transpose(1, 2))
        block.experts.down_proj.copy_(e.w_out.transpose(1, 2))
    return block


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(fn, x: torch.Tensor, weight: torch.Tensor, params: list[torch.Tensor]) -> float:
    """Seconds for forward + backward of (fn(x) * weight).sum() (a real, non-constant gradient).
    Gradients are cleared first, as zero_grad(set_to_none=True) does in training; on a GPU the
    clock stops when the device has finished."""
    x.grad = None
    for p in params:
        p.grad = None
    synchronize(x.device)
    start = time.perf_counter()
    out = fn(x)
    (out * weight).sum().backward()
    synchronize(x.device)
    return time.perf_counter() - start


def bench_shape(d: int, f: int, E: int, k: int, tokens: int, reps: int, with_hf: bool, eager_limit: int,
                paths: bool = False, device: torch.device = CPU, dtype: torch.dtype = torch.float32) -> dict:
    torch.manual_seed(0)
    layer = our_layer(d, f, E, k)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.05)
    layer.to(device, dtype)
    dense = MLP(d, k * f, "swiglu").to(device, dtype)
    x = torch.randn(tokens, d, requires_grad=True, device=device, dtype=dtype)
    w = torch.randn(tokens, d, device=device, dtype=dtype)
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-2}
    impls = {"ours": lambda t: layer(t[None])[0][0], "dense": dense}
    modules = [layer, dense]
    if paths:
        for path in DISPATCH_PATHS:
            if path == "gather" and tokens * k * d * f * 4 > GATHER_BYTES:
                continue  # it gathers every row's weights: at this shape more memory than a benchmark should take
            twin = our_layer(d, f, E, k).to(device, dtype)
            twin.load_state_dict(layer.state_dict())
            twin.dispatch = path
            modules.append(twin)
            impls[f"path_{path}"] = lambda t, m=twin: m(t[None])[0][0]
    if with_hf:
        for name in ("grouped_mm", "eager"):
            if name == "eager" and E > eager_limit:
                continue  # eager grows with E squared in backward; skipped past the limit
            block = hf_block(layer, name).to(device, dtype)
            modules.append(block)
            with torch.no_grad():
                torch.testing.assert_close(block(x[None])[0], layer(x[None])[0][0], **tolerance)
            impls[f"hf_{name}"] = lambda t, b=block: b(t[None])[0]
    x_sorted = torch.randn(tokens * k, d, requires_grad=True, device=device, dtype=dtype)
    w_sorted = torch.randn(tokens * k, d, device=device, dtype=dtype)
    counts = torch.full((E,), tokens * k // E, device=device)
    counts[: tokens * k % E] += 1
    path = choose_dispatch(d, f, x.dtype, x.device)
    buffers = [torch.empty_like(p) for p in (layer.experts.w_in, layer.experts.w_out)]

    def weight_pass() -> float:
        synchronize(device)
        start = time.perf_counter()
        for b, p in zip(buffers, (layer.experts.w_in, layer.experts.w_out)):
            b.copy_(p)
        synchronize(device)
        return time.perf_counter() - start

    params = [p for m in modules for p in m.parameters()]
    timers = {name: (lambda fn=fn: step(fn, x, w, params)) for name, fn in impls.items()}
    timers["experts"] = lambda: step(lambda t: layer.experts(t, counts, path), x_sorted, w_sorted, params)
    timers["weight_pass"] = weight_pass
    times = {name: [] for name in timers}
    for timer in timers.values():
        timer()  # warm-up
    for _ in range(reps):
        for name, timer in timers.items():
            times[name].append(timer())
    median = {name: statistics.median(t) for name, t in times.items()}
    row = {"d_model": d, "n_experts": E, "top_k": k, "expert_width": f, "tokens": tokens,
           **{f"{name}_ms": 1e3 * t for name, t in median.items()},
           "ratio_vs_dense": median["ours"] / median["dense"],
           "ratio_experts_vs_dense": median["experts"] / median["dense"],
           "routing_share": 1 - median["experts"] / median["ours"]}
    if "hf_grouped_mm" in median:
        row["ratio_vs_hf"] = median["ours"] / median["hf_grouped_mm"]
    if "hf_eager" in median:
        row["ratio_vs_hf_eager"] = median["ours"] / median["hf_eager"]
    for path in DISPATCH_PATHS:
        if f"path_{path}" in median:
            row[f"ratio_{path}_vs_dense"] = median[f"path_{path}"] / median["dense"]
    return row


def grid(full: bool, tiny: bool = False):
    if tiny:  # a smoke test of every code path (gpu_check.sh --dry-run), not a measurement
        return itertools.product((32,), (16,), (4,), (1, 2), (64,))
    if full:
        return itertools.product((256, 1024), (128, 256, 512, 1024), (8, 32, 64, 128, 256), (1, 2, 8), (4096, 16384))
    return itertools.product((256,), (128, 512), (8, 32, 64, 128, 256), (1, 2, 8), (4096,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the whole grid of the issue")
    parser.add_argument("--tiny", action="store_true", help="two tiny shapes: checks that every path runs")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-hf", action="store_true", help="skip transformers' blocks")
    parser.add_argument("--eager-limit", type=int, default=64, help="largest E for transformers' eager path")
    parser.add_argument("--json", help="write the table here")
    parser.add_argument("--paths", action="store_true", help="time moelab's expert paths side by side")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), torch.bfloat16 if args.dtype == "bf16" else torch.float32
    print(f"device {args.device}, {args.dtype}, moelab expert path {choose_dispatch(256, 128, dtype, device)}", flush=True)
    rows = []
    if args.paths:
        print(f"{'E':>4} {'k':>2} {'f':>5} {'rows/expert':>11} | " + " ".join(f"{p + ' vs dense':>20}" for p in DISPATCH_PATHS),
              flush=True)
        for d, f, E, k, tokens in grid(args.full, args.tiny):
            if k >= E:
                continue
            r = bench_shape(d, f, E, k, tokens, args.reps, False, 0, paths=True, device=device, dtype=dtype)
            rows.append(r)
            print(f"{E:>4} {k:>2} {f:>5} {tokens * k / E:>11.0f} | " +
                  " ".join(f"{r.get(f'ratio_{p}_vs_dense', math.nan):>20.2f}" for p in DISPATCH_PATHS), flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(rows, handle, indent=2)
        return
    print(f"{'d':>5} {'E':>4} {'k':>2} {'f':>5} {'T':>6} | {'ours ms':>8} {'dense ms':>8} {'hf_gmm ms':>9} "
          f"{'hf_eager ms':>11} | {'vs dense':>8} {'vs hf':>6} {'vs eager':>8} | {'experts ms':>10} "
          f"{'w-pass ms':>9} {'experts vs dense':>16} {'routing':>7}", flush=True)
    for d, f, E, k, tokens in grid(args.full, args.tiny):
        if k >= E:
            continue
        r = bench_shape(d, f, E, k, tokens, args.reps, not args.no_hf, args.eager_limit, device=device, dtype=dtype)
        rows.append(r)
        fmt = lambda key, w, p: f"{r[key]:>{w}.{p}f}" if key in r else f"{'-':>{w}}"  # noqa: E731
        print(f"{d:>5} {E:>4} {k:>2} {f:>5} {tokens:>6} | {fmt('ours_ms', 8, 1)} {fmt('dense_ms', 8, 1)} "
              f"{fmt('hf_grouped_mm_ms', 9, 1)} {fmt('hf_eager_ms', 11, 1)} | {fmt('ratio_vs_dense', 8, 2)} "
              f"{fmt('ratio_vs_hf', 6, 2)} {fmt('ratio_vs_hf_eager', 8, 3)} | {fmt('experts_ms', 10, 1)} "
              f"{fmt('weight_pass_ms', 9, 1)} {fmt('ratio_experts_vs_dense', 16, 2)} {r['routing_share']:>7.0%}",
              flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
