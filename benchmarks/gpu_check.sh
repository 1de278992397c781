#!/usr/bin/env bash
# The prepared device check (one H100/H200, under 10 minutes): run from the repository root,
#     bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
# It prints, side by side, and writes to OUT_DIR (default $OUT, else gpu-check/):
#   1. the MoE layer in bf16: moelab's dispatch against transformers' grouped_mm block and the
#      dense limit (benchmarks/moe_layer.py, the d_model 1024 shapes of the full grid);
#   2. tokens/s and MFU of a training step of a ~0.55B-active, 2.1B-total MoE (bf16 autocast);
#   3. the wall time of `moelab train --preset tiny-moe` on the GPU, beside the CPU preset time.
# It installs nothing and needs nothing the lent GPU image lacks: torch with CUDA, transformers,
# safetensors, numpy, typer and rich (moelab itself comes from src/; bm25s, which the image lacks,
# is imported only by the probe's selective context, and configs are written without tomli-w).
# --dry-run runs every step at tiny shapes on the CPU in under a minute (the test suite does, so
# the script never reaches a GPU untested).
set -euo pipefail
dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"

if (( dry_run )); then
    device=cpu; layer_args=(--tiny --reps 1 --eager-limit 4); layer_rows='$1 == 32'
    step_args=(--d-model 64 --layers 2 --experts 4 --expert-width 64 --top-k 2 --batch 2 --seq 32 --steps 2 --vocab 256)
    exposures=1
    echo "dry run: every step at tiny shapes on the CPU; nothing here is a measurement"
else
    device=cuda; layer_args=(--full --reps 5 --eager-limit 0); layer_rows='$1 == 1024'
    step_args=(--d-model 1536 --layers 24 --experts 16 --expert-width 1024 --top-k 2 --batch 16 --seq 512 --steps 10)
    exposures=0  # the preset's own
    python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch " + torch.__version__ + "; nothing measured")
name = torch.cuda.get_device_name()
print(f"device: {name}, compute capability {torch.cuda.get_device_capability()}, torch {torch.__version__}")
PY
fi

echo "== 1. MoE layer, bf16 (ratios: lower is faster) =="
timeout 240 python benchmarks/moe_layer.py "${layer_args[@]}" --device "$device" --dtype bf16 \
    --json "$out/moe_layer.json" | awk "NR <= 2 || $layer_rows" | tee "$out/moe_layer.txt"

echo "== 2. training step of a large MoE (tokens/s, MFU) =="
timeout 180 python benchmarks/train_step.py --mfu --device "$device" --dtype bf16 "${step_args[@]}" | tee "$out/mfu.txt"

echo "== 3. tiny-moe on the $device =="
python - "$out/tiny-moe.toml" "$device" "$exposures" <<'PY'
import sys
from moelab.config import load_preset, save_config
cfg = load_preset("tiny-moe")
cfg.train.device = sys.argv[2]
if int(sys.argv[3]):
    cfg.train.exposures = int(sys.argv[3])
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
