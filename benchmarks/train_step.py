"""Full training steps (forward, backward, AdamW) of the lab's tiny presets and of a ladder of
expert counts at a fixed active size, timed side by side in one process, interleaved.

Prints per model the median step time split into forward+backward and optimizer, and the ratios
to the E=8 model and to the dense model. At fixed active size the forward and backward work stays
flat as experts multiply, but the optimizer touches every expert's weights, gradients and Adam
moments each step, which grows with total parameters: the split shows which dominates.

    python benchmarks/train_step.py                        # the tiny presets' shape, batch 32
    python benchmarks/train_step.py --d-model 256 --expert-width 128 --batch 128

With --memory pkm (or peer), a product-key memory layer instead of experts, at a fixed active
size (heads x top_k slots read per token) and N from --slots: each N with its tables updated by
SparseAdam on sparse gradients (only the rows read) and by dense AdamW (every row and both
moments, every step), timed side by side.

    python benchmarks/train_step.py --memory pkm --slots 4096,16384,65536,262144,1048576

With --mfu, the tokens/s and model FLOPs utilisation of a large MoE's training step (on a GPU:
benchmarks/gpu_check.sh), for example about 0.5B active:

    python benchmarks/train_step.py --mfu --device cuda --d-model 1536 --layers 24 --experts 16 \
        --expert-width 1024 --top-k 2 --batch 16 --seq 512 --steps 10

With --compile, train.compile (torch.compile of the step's forward and loss as one graph, routed
experts eager) against eager for each shape of --profile-shapes, with model FLOP/s against the
GEMM rate, the compile time and the steps it takes to pay for itself.

    python benchmarks/train_step.py --compile --steps 100

With --profile, the shapes whose training steps the science presets pay for (paper-moe's and the
frontiers'; --profile-shapes picks some): ms per fp32 step, the model's FLOP/s against a 1024^3
fp32 GEMM on the same core, and where the time goes (torch.profiler's operators by self time).

    python benchmarks/train_step.py --profile

With --dispatch, each MoE shape of --profile-shapes under every model.moe.dispatch ("auto" is
choose_dispatch's path: the grouped GEMM on CPU), interleaved, with the speed-up over "auto".

    python benchmarks/train_step.py --dispatch --steps 60
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from moelab.allocator import reuse_freed_memory
from moelab.config import DataConfig, MemoryConfig, ModelConfig, MoEConfig, RunConfig, TrainConfig, resolve
from moelab.knowledge import build_knowledge_base
from moelab.models import Transformer, count_params
from moelab.models.params import lab_architecture, training_flops_per_token
from moelab.training import clip_gradients, compiled_step_losses, make_optimizer, step_losses


def make(d_model: int, width: int, n_experts: int, vocab: int) -> Transformer:
    moe = MoEConfig(n_experts=n_experts, top_k=1, expert_width=width, aux_loss_weight=0.01) if n_experts else MoEConfig()
    cfg = resolve(RunConfig(model=ModelConfig(d_model=d_model, n_layers=2, n_heads=4, d_ff=width, mlp="swiglu",
                                               moe=moe))).model
    torch.manual_seed(0)
    return Transformer(cfg, vocab)


def make_memory(d_model: int, kind: str, slots: int, vocab: int) -> Transformer:
    n_keys = math.isqrt(slots)
    if n_keys * n_keys != slots:
        raise SystemExit(f"--slots {slots}: N must be a square (N = n_keys ** 2)")
    memory = MemoryConfig(kind=kind, layers=[1], n_keys=n_keys, heads=4, top_k=8, key_dim=32)
    cfg = resolve(RunConfig(model=ModelConfig(d_model=d_model, n_layers=2, n_heads=4, d_ff=4 * d_model, mlp="gelu",
                                               memory=memory))).model
    torch.manual_seed(0)
    return Transformer(cfg, vocab)


def timed_step(model, optimizer, inputs, targets, losses=None) -> tuple[float, float]:
    """(forward+backward, optimizer) seconds of one training step; `losses` is the step's loss
    function (training.step_losses of the model by default, or a compiled one)."""
    start = time.perf_counter()
    lm_loss, aux = (losses or functools.partial(step_losses, model))(inputs, targets, False)
    loss = lm_loss + aux
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if any(p.grad is not None and p.grad.is_sparse for p in model.parameters()):
        clip_gradients(list(model.parameters()), 1.0)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    middle = time.perf_counter()
    optimizer.step()  # with its hooks (the MoE balancing)
    return middle - start, time.perf_counter() - middle


def interleaved_times(models: dict, optimizers: dict, batches, losses: dict | None = None) -> dict:
    """Per model, the (forward+backward, optimizer) seconds of every batch, the models taking
    turns on each batch after one warm-up step each (`losses`: a loss function per model)."""
    losses = losses or {}
    times = {key: ([], []) for key in models}
    for key in models:
        timed_step(models[key], optimizers[key], batches[0].inputs, batches[0].targets, losses.get(key))
    for batch in batches:
        for key in models:
            compute, update = timed_step(models[key], optimizers[key], batch.inputs, batch.targets, losses.get(key))
            times[key][0].append(compute)
            times[key][1].append(update)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=40)
    parser.add_argument("--expert-width", type=int, default=104)
    parser.add_argument("--batch", type=int, default=32, help="paragraphs per step")
    parser.add_argument("--experts", default="0,8,16,32,64,128,256")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory", choices=("pkm", "peer"), help="time a memory layer against N instead")
    parser.add_argument("--slots", default="4096,16384,65536,262144,1048576", help="memory sizes N (squares)")
    parser.add_argument("--dispatch", action="store_true",
                        help="each MoE shape of --profile-shapes under each model.moe.dispatch, interleaved")
    parser.add_argument("--compile", action="store_true",
                        help="each shape of --profile-shapes under train.compile against eager, interleaved")
    parser.add_argument("--mfu", action="store_true",
                        help="tokens/s and model FLOPs utilisation of one large MoE's training step instead")
    parser.add_argument("--layers", type=int, default=24, help="with --mfu")
    parser.add_argument("--top-k", type=int, default=2, help="with --mfu")
    parser.add_argument("--seq", type=int, default=512, help="with --mfu: tokens per sequence")
    parser.add_argument("--vocab", type=int, default=32768, help="with --mfu")
    parser.add_argument("--device", default="cpu", help="with --mfu: cpu or cuda")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16", help="with --mfu")
    parser.add_argument("--profile", action="store_true", help="profile the science presets' step shapes")
    parser.add_argument("--profile-shapes", default=",".join(PROFILE_SHAPES), help="with --profile")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="with --mfu: the device's dense peak (H100/H200 SXM bf16: 989)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as moelab.training.train runs the step (benchmarks/allocator.py: with and without)

    if args.profile:
        profile_table(args)
        return
    if args.dispatch:
        dispatch_table(args)
        return
    if args.compile:
        compile_table(args)
        return
    if args.mfu:
        return model_flops_utilisation(args)
    kb = build_knowledge_base(DataConfig())
    rng = np.random.default_rng(0)
    batches = [kb.training_batch(rng.integers(0, kb.n_people, args.batch), rng) for _ in range(args.steps)]
    if args.memory:
        return memory_ladder(args, kb, batches)
    ladder = [int(e) for e in args.experts.split(",")]
    models = {e: make(args.d_model, args.expert_width, e, len(kb.vocab)) for e in ladder}
    optimizers = {e: make_optimizer(m, TrainConfig(), torch.device("cpu")) for e, m in models.items()}
    times = interleaved_times(models, optimizers, batches)

    tokens = batches[0].inputs.numel()
    print(f"d_model {args.d_model}, expert width {args.expert_width}, top-1, {tokens} tokens/step, "
          f"{args.threads} thread(s), median of {args.steps} interleaved steps")
    print(f"{'E':>4} {'P_total':>10} {'P_active':>9} | {'fwd+bwd ms':>10} {'optim ms':>9} {'step ms':>8} | "
          f"{'vs E=8':>7} {'vs dense':>8}")
    step = {e: statistics.median(c) + statistics.median(u) for e, (c, u) in times.items()}
    for e in ladder:
        c = count_params(models[e].cfg, len(kb.vocab))
        compute, update = (statistics.median(t) for t in times[e])
        vs8 = f"{step[e] / step[8]:>7.2f}" if 8 in step else f"{'-':>7}"
        vs_dense = f"{step[e] / step[0]:>8.2f}" if 0 in step else f"{'-':>8}"
        print(f"{e:>4} {c.total:>10,} {c.active:>9,} | {1e3 * compute:>10.2f} {1e3 * update:>9.2f} "
              f"{1e3 * step[e]:>8.2f} | {vs8} {vs_dense}")


PAPER_MOE = {"data.n_people": 5500, "model.d_model": 32, "model.n_heads": 4, "model.mlp": "gelu"}
ONE_LAYER = {"data.n_people": 12000, "model.d_model": 32, "model.n_heads": 4, "model.mlp": "gelu", "model.n_layers": 1}
PROFILE_SHAPES = {  # name: fields over tiny-dense (the run presets' own values)
    "paper-moe dense d-4d-d": PAPER_MOE | {"model.d_ff": 128},
    "paper-moe dense 146K": PAPER_MOE | {"model.d_ff": 1040},
    "paper-moe 32 experts learned": PAPER_MOE | {"model.moe.n_experts": 32, "model.moe.expert_width": 32},
    "frontier dense d_ff 4096": ONE_LAYER | {"model.d_ff": 4096},
    "frontier 128 experts w32 hash": ONE_LAYER | {"model.moe.n_experts": 128, "model.moe.expert_width": 32,
                                                  "model.moe.router": "hash", "model.moe.aux_loss_weight": 0.0,
                                                  "model.moe.z_loss_weight": 0.0},
    "frontier-v3 256 experts w24 hash": ONE_LAYER | {"model.moe.n_experts": 256, "model.moe.expert_width": 24,
                                                     "model.moe.router": "hash", "model.moe.aux_loss_weight": 0.0,
                                                     "model.moe.z_loss_weight": 0.0},
    "memory-frontier-v2 PKM n_keys 128": ONE_LAYER | {"model.d_ff": 128, "model.memory.kind": "pkm",
                                                      "model.memory.n_keys": 128, "model.memory.top_k": 8,
                                                      "model.memory.key_dim": 16, "model.memory.heads": 2},
    "memory-frontier-v2 PKM n_keys 256": ONE_LAYER | {"model.d_ff": 128, "model.memory.kind": "pkm",
                                                      "model.memory.n_keys": 256, "model.memory.top_k": 8,
                                                      "model.memory.key_dim": 16, "model.memory.heads": 2},
}


def gemm_rate(size: int = 1024, reps: int = 5) -> float:
    """FLOP/s of a size^3 fp32 matrix product on this core: the reference for model FLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start)


def dispatch_table(args) -> None:
    """Per MoE shape of --profile-shapes: the training step under each expert path (the same
    initial weights, the paths taking turns on every batch, so machine load falls on all alike),
    ms per step and the ratio to "auto" (choose_dispatch's path)."""
    from moelab.config import DISPATCHES, load_preset
    from moelab.provenance import cpu_model
    from moelab.sweeps.grid import with_fields

    print(f"{cpu_model()}, {args.threads} thread(s), median of {args.steps} interleaved fp32 training steps")
    for name in args.profile_shapes.split(","):
        if "model.moe.n_experts" not in PROFILE_SHAPES[name]:
            continue
        models, optimizers = {}, {}
        for path in DISPATCHES:
            cfg = with_fields(load_preset("tiny-dense"), PROFILE_SHAPES[name] | {
                "model.d_ff": 128, "model.moe.top_k": 1, "model.moe.dispatch": path})
            torch.manual_seed(0)
            models[path] = Transformer(cfg.model, 134)
            optimizers[path] = make_optimizer(models[path], cfg.train, torch.device("cpu"))
        kb = build_knowledge_base(cfg.data)
        rng = np.random.default_rng(0)
        batches = [kb.training_batch(rng.integers(0, kb.n_people, cfg.train.batch_size), rng)
                   for _ in range(args.steps)]
        times = interleaved_times(models, optimizers, batches)
        ms = {path: statistics.median(a + b for a, b in zip(*times[path])) * 1e3 for path in DISPATCHES}
        print(f"{name}: " + ", ".join(f"{path} {ms[path]:.1f} ms (x{ms['auto'] / ms[path]:.2f})" for path in DISPATCHES))


def profile_table(args) -> None:
    """Per shape: ms per fp32 training step (median), model FLOP/s as a share of the GEMM rate, and
    the operators that take the most self time."""
    from torch.profiler import ProfilerActivity, profile

    from moelab.config import load_preset
    from moelab.models.params import training_flops_per_token
    from moelab.provenance import cpu_model
    from moelab.sweeps.grid import with_fields

    rate = gemm_rate()
    print(f"{cpu_model()}, {args.threads} thread(s); 1024^3 fp32 GEMM: {rate / 1e9:.0f} GFLOP/s")
    for name in args.profile_shapes.split(","):
        cfg = with_fields(load_preset("tiny-dense"), PROFILE_SHAPES[name] | (
            {"model.d_ff": 128, "model.moe.top_k": 1} if "model.moe.n_experts" in PROFILE_SHAPES[name] else {}))
        kb = build_knowledge_base(cfg.data)
        torch.manual_seed(0)
        model = Transformer(cfg.model, len(kb.vocab))
        optimizer = make_optimizer(model, cfg.train, torch.device("cpu"))
        rng = np.random.default_rng(0)
        batches = [kb.training_batch(rng.integers(0, kb.n_people, cfg.train.batch_size), rng)
                   for _ in range(args.steps)]
        for b in batches[:3]:
            timed_step(model, optimizer, b.inputs, b.targets)
        times = [sum(timed_step(model, optimizer, b.inputs, b.targets)) for b in batches]
        ms = statistics.median(times) * 1e3
        tokens = int(batches[0].inputs.numel())
        flops = training_flops_per_token(lab_architecture(cfg.model, len(kb.vocab)), batches[0].inputs.shape[1],
                                         ) * tokens
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in batches[:10]:
                timed_step(model, optimizer, b.inputs, b.targets)
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ops)
        top = ", ".join(f"{e.key.removeprefix('aten::')[:34]} {e.self_cpu_time_total / total:.0%}" for e in ops[:6])
        counts = count_params(cfg.model, len(kb.vocab))
        print(f"{name}: {counts.total:,} total, {counts.active:,} active; {ms:.1f} ms/step; "
              f"model {flops / (ms / 1e3) / 1e9:.1f} GFLOP/s = {flops / (ms / 1e3) / rate:.0%} of the GEMM rate\n"
              f"    self time: {top}", flush=True)


def model_flops_utilisation(args) -> None:
    """Training steps (forward, backward, AdamW; bf16 autocast) of a d_model x layers MoE on random
    tokens: tokens/s, and MFU = tokens/s x training FLOPs per token (6 x active, plus attention;
    models/params.py) / peak."""
    device = torch.device(args.device)
    experts = int(args.experts.split(",")[-1])
    cfg = resolve(RunConfig(model=ModelConfig(
        d_model=args.d_model, n_layers=args.layers, n_heads=max(1, args.d_model // 128), d_ff=args.expert_width,
        mlp="swiglu", tie_embeddings=False, moe=MoEConfig(n_experts=experts, top_k=args.top_k,
                                                           expert_width=args.expert_width, renormalize=args.top_k > 1))))
    torch.manual_seed(0)
    model = Transformer(cfg.model, args.vocab).to(device)
    optimizer = make_optimizer(model, TrainConfig(), device)
    counts = count_params(cfg.model, args.vocab)
    flops = training_flops_per_token(lab_architecture(cfg.model, args.vocab), args.seq)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=device)
    times = []
    for i in range(args.steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            logits, aux = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()) + aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    rate = args.batch * args.seq / step
    print(f"MoE d_model {args.d_model}, {args.layers} layers, {experts} experts of width {args.expert_width}, "
          f"top-{args.top_k}, vocab {args.vocab}: {counts.total / 1e9:.2f}B total, {counts.active / 1e9:.3f}B active")
    print(f"{args.device} {args.dtype}, {args.batch} x {args.seq} tokens/step, median of {args.steps} steps: "
          f"{1e3 * step:.1f} ms/step, {rate:,.0f} tokens/s, {flops / 1e9:.2f} GFLOP/token (training), "
          f"MFU {rate * flops / (args.peak_tflops * 1e12):.1%} of {args.peak_tflops:g} TFLOP/s")


def compile_table(args) -> None:
    """Per shape of --profile-shapes: eager against train.compile (the whole step's forward and
    loss in one compiled graph; routed experts eager, except the gather path, which traces), and
    for MoE shapes also model.moe.dispatch = "gather" compiled; the same initial weights, taking
    turns on every batch. Ms per step, model FLOP/s against the GEMM rate, the speed-up over eager;
    compile seconds are a compiled step's first call less the eager one's, compiled cold (dynamo
    reset and inductor's on-disk caches off)."""
    from moelab.config import load_preset
    from moelab.provenance import cpu_model
    from moelab.sweeps.grid import with_fields

    torch._inductor.config.fx_graph_cache = False
    torch._inductor.config.autotune_local_cache = False
    rate = gemm_rate()
    print(f"{cpu_model()}, {args.threads} thread(s); 1024^3 fp32 GEMM: {rate / 1e9:.0f} GFLOP/s; "
          f"median of {args.steps} interleaved fp32 steps after the first")
    for name in args.profile_shapes.split(","):
        moe = "model.moe.n_experts" in PROFILE_SHAPES[name]
        fields = PROFILE_SHAPES[name] | ({"model.d_ff": 128, "model.moe.top_k": 1} if moe else {})
        variants = {"eager": fields, "compiled": fields} | ({"gather, compiled": fields | {"model.moe.dispatch": "gather"}}
                                                             if moe else {})
        cfgs = {k: with_fields(load_preset("tiny-dense"), v) for k, v in variants.items()}
        cfg = cfgs["eager"]
        kb = build_knowledge_base(cfg.data)
        torch.manual_seed(0)
        models = {k: Transformer(c.model, len(kb.vocab)) for k, c in cfgs.items()}
        for model in models.values():
            model.load_state_dict(models["eager"].state_dict())
        optimizers = {k: make_optimizer(m, cfg.train, torch.device("cpu")) for k, m in models.items()}
        torch._dynamo.reset()
        losses = {k: compiled_step_losses(m) if "compiled" in k else None for k, m in models.items()}
        rng = np.random.default_rng(0)
        batches = [kb.training_batch(rng.integers(0, kb.n_people, cfg.train.batch_size), rng)
                   for _ in range(args.steps + 1)]
        first = {k: sum(timed_step(m, optimizers[k], batches[0].inputs, batches[0].targets, losses[k]))
                 for k, m in models.items()}
        times = interleaved_times(models, optimizers, batches[1:], losses)
        step = {k: statistics.median(a + b for a, b in zip(*t)) for k, t in times.items()}
        flops = training_flops_per_token(lab_architecture(cfg.model, len(kb.vocab)), batches[0].inputs.shape[1]
                                         ) * batches[0].inputs.numel()
        print(f"{name} ({count_params(cfg.model, len(kb.vocab)).total:,} total):", flush=True)
        for k in models:
            saved = step["eager"] - step[k]
            compile_seconds = first[k] - first["eager"]
            paid = (f"; compiled in {compile_seconds:.1f} s, even after "
                    f"{compile_seconds / saved:,.0f} steps" if saved > 0 else "; never pays") if losses[k] else ""
            print(f"    {k:<17} {1e3 * step[k]:7.2f} ms ({flops / step[k] / rate:4.0%} of the GEMM rate), "
                  f"x{step['eager'] / step[k]:.2f}{paid}", flush=True)


def memory_ladder(args, kb, batches) -> None:
    ladder = [int(n) for n in args.slots.split(",")]
    models, optimizers = {}, {}
    for n in ladder:
        for update in ("sparse", "dense"):
            models[n, update] = make_memory(args.d_model, args.memory, n, len(kb.vocab))
            optimizers[n, update] = make_optimizer(models[n, update], TrainConfig(memory_optimizer=update),
                                                   torch.device("cpu"))
    times = interleaved_times(models, optimizers, batches)

    print(f"{args.memory} memory in layer 2 of 2, d_model {args.d_model}, 4 heads x top-8 slots per token, "
          f"{batches[0].inputs.numel()} tokens/step, {args.threads} thread(s), median of {args.steps} interleaved steps")
    print(f"{'N':>9} {'P_total':>11} {'P_active':>9} | {'update':>6} {'fwd+bwd ms':>10} {'optim ms':>9} "
          f"{'step ms':>8} | {'dense/sparse':>12} {'vs smallest N':>13}")
    step = {key: statistics.median(c) + statistics.median(u) for key, (c, u) in times.items()}
    for n in ladder:
        c = count_params(models[n, "sparse"].cfg, len(kb.vocab))
        for update in ("sparse", "dense"):
            compute, optim = (statistics.median(t) for t in times[n, update])
            ratio = f"{step[n, 'dense'] / step[n, 'sparse']:>12.2f}" if update == "dense" else f"{'':>12}"
            print(f"{n:>9,} {c.total:>11,} {c.active:>9,} | {update:>6} {1e3 * compute:>10.2f} {1e3 * optim:>9.2f} "
                  f"{1e3 * step[n, update]:>8.2f} | {ratio} {step[n, update] / step[ladder[0], update]:>13.2f}")


if __name__ == "__main__":
    main()
