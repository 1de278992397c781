#!/usr/bin/env bash
# The prepared device check (one H100/H200, under 10 minutes): run from the repository root,
#     bash benchmarks/gpu_check.sh [OUT_DIR]
# It prints, side by side, and writes to OUT_DIR (default $OUT, else gpu-check/):
#   1. the MoE layer in bf16: moelab's dispatch against transformers' grouped_mm block and the
#      dense limit (benchmarks/moe_layer.py, the d_model 1024 shapes of the full grid);
#   2. tokens/s and MFU of a training step of a ~0.55B-active, 2.1B-total MoE (bf16 autocast);
#   3. the wall time of `moelab train --preset tiny-moe` on the GPU, beside the CPU preset time.
# It needs a CUDA build of torch and moelab importable (pip install -e '.[hf]'); it installs nothing.
set -euo pipefail
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch " + torch.__version__ + "; nothing measured")
name = torch.cuda.get_device_name()
print(f"device: {name}, compute capability {torch.cuda.get_device_capability()}, torch {torch.__version__}")
PY
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}src"

echo "== 1. MoE layer, bf16, d_model 1024 (ratios: lower is faster) =="
timeout 240 python benchmarks/moe_layer.py --full --device cuda --dtype bf16 --reps 5 --eager-limit 0 \
    --json "$out/moe_layer.json" | awk 'NR <= 2 || $1 == 1024' | tee "$out/moe_layer.txt"

echo "== 2. training step of a ~0.55B-active MoE =="
timeout 180 python benchmarks/train_step.py --mfu --device cuda --dtype bf16 --d-model 1536 --layers 24 \
    --experts 16 --expert-width 1024 --top-k 2 --batch 16 --seq 512 --steps 10 | tee "$out/mfu.txt"

echo "== 3. tiny-moe on the GPU =="
python - "$out/tiny-moe.toml" <<'PY'
import sys
from moelab.config import load_preset, save_config
cfg = load_preset("tiny-moe")
cfg.train.device = "cuda"
save_config(cfg, sys.argv[1])
PY
start=$(date +%s.%N)
timeout 240 python -m moelab train "$out/tiny-moe.toml" --out "$out/tiny-moe" > "$out/tiny-moe.txt"
end=$(date +%s.%N)
python - "$out/tiny-moe/metrics.json" "$start" "$end" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"tiny-moe on {m['device']}: {float(sys.argv[3]) - float(sys.argv[2]):.1f} s wall "
      f"({m['train_seconds']:.1f} s training, {m['steps']} steps, expert path {m['dispatch']}), "
      f"{m['bits']:,.0f} bits, recall {m['accuracy']:.1%}")
PY
