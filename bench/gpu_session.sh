#!/usr/bin/env bash
# Every GPU measurement bioknow asks for, in one call that fits a short lease (about 8 minutes on one H100/H200):
#   1. `make gpu-check`: the paper shape's training step (tokens/s, MFU) and a 300-step slice of the paper preset
#      through the real pipeline, with the projected hours for 80,000 steps;
#   2. the small presets' step on the GPU (launch-bound), compiled and not;
#   3. DDP: one NCCL process under torchrun against the plain single-process run (loss curves side by side);
#   4. a profile of the paper-shape step (the kernels that take the time);
#   5. with what time is left, the mixed-training scale study's GPU points, many runs side by side.
# The paper's shape probed (12 x 768 at N = 10,000: memorisation, probes by block, QA) is bench/gpu_paper_shape.sh,
# a call of its own before this one.
# Installs nothing, needs no network, writes everything under OUT (default gpu_out/) and packs it into
# OUT/gpu_results.tar.gz. Without a CUDA GPU it stops at once with one line (exit 1). DRY=1 runs every step at toy
# sizes on the CPU, to check the script itself.
#
#     bash bench/gpu_session.sh [OUT]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_out}}
mkdir -p "$OUT/results"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
start=$(date +%s)
DEADLINE=${DEADLINE:-540}  # seconds from the start by which the scale study must stop
elapsed() { echo $(( $(date +%s) - start )); }
step() { echo; echo "=== [$(elapsed) s] $*"; }

if [ -z "${DRY:-}" ]; then
    $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_session: no CUDA GPU here')" || exit 1
    DEV=cuda; PAPER=(--preset paper); SMALL=(--preset cpu); JOBS=${JOBS:-12}
else  # toy sizes on the CPU: the script's plumbing, not its numbers
    DEV=cpu; PAPER=(--preset tiny); SMALL=(--preset tiny); JOBS=2; DEADLINE=${DEADLINE:-240}
fi

step "machine"
{ nvidia-smi 2>/dev/null || true; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"; nproc; } | tee "$OUT/machine.txt"

step "1. make gpu-check"
if [ -z "${DRY:-}" ]; then
    timeout 300 make gpu-check PYTHON=$PY 2>&1 | tee "$OUT/gpu_check.txt"
    cp runs/gpu-check/log.jsonl "$OUT/results/gpu_check_log.jsonl" 2>/dev/null
    cp runs/gpu-check/config.json "$OUT/results/gpu_check_config.json" 2>/dev/null
else
    $PY bioknow.py bench "${PAPER[@]}" --steps 3 --device $DEV | tee "$OUT/gpu_check.txt"
fi

step "2. small presets on the GPU: steps/s, compiled (auto) and eager"
for compile in auto off; do
    timeout 90 $PY bioknow.py bench "${SMALL[@]}" --steps 200 --warmup 20 --device $DEV --compile $compile \
        | tee -a "$OUT/results/bench_small.jsonl"
done
timeout 60 $PY bioknow.py bench "${SMALL[@]}" --batch-size 64 --steps 100 --warmup 10 --device $DEV \
    | tee -a "$OUT/results/bench_small.jsonl"

step "3. DDP: one NCCL process under torchrun against one plain process"
DDP_DATA=$OUT/ddp-data
$PY bioknow.py generate --out "$DDP_DATA" --people 200 --aug single --force --quiet > /dev/null
ARGS=(--data "$DDP_DATA" --preset tiny --steps 100 --log-every 10 --device $DEV --compile off --force --quiet)
timeout 90 $PY bioknow.py train --out "$OUT/ddp-single" "${ARGS[@]}"
timeout 90 $PY -m torch.distributed.run --standalone --nproc_per_node=1 bioknow.py train --out "$OUT/ddp-torchrun" \
    "${ARGS[@]}"
$PY - "$OUT" <<'EOF' | tee "$OUT/results/ddp.json"
import json, sys
out = sys.argv[1]
curves = {name: [json.loads(line) for line in open(f"{out}/ddp-{name}/log.jsonl")] for name in ("single", "torchrun")}
config = json.load(open(f"{out}/ddp-torchrun/config.json"))
gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(curves["single"], curves["torchrun"]))
print(json.dumps(dict(processes=config["processes"], steps=[r["step"] for r in curves["single"]],
                      single=[r["loss"] for r in curves["single"]], torchrun=[r["loss"] for r in curves["torchrun"]],
                      max_gap=gap)))
EOF

step "4. profile of the paper-shape step"
timeout 120 $PY - "$DEV" "${PAPER[1]}" <<'EOF' | tee "$OUT/results/profile.txt"
import sys, torch
import bioknow as bk
from bioknow import synchronize
device, preset = sys.argv[1], sys.argv[2]
cfg = bk.resolve_config(preset, device=device, compile="off")
bk.tune_for(device)
step, model = bk.bench_step(cfg, len(bk.VOCAB), device)
for _ in range(3):
    step()
synchronize(device)
activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else [])
with torch.profiler.profile(activities=activities) as prof:
    for _ in range(5):
        step()
    synchronize(device)
key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
print(f"eager step, {cfg.batch_size} x {cfg.block_size} tokens, {cfg.n_layer}x{cfg.n_embd}; 5 steps")
print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
EOF

step "5. mixed-training scale study, GPU points, $JOBS side by side, until $DEADLINE s"
left=$(( DEADLINE - $(elapsed) ))
if [ "$left" -gt 60 ]; then
    if [ -z "${DRY:-}" ]; then
        TORCHINDUCTOR_COMPILE_THREADS=1 timeout "$left" $PY experiments/tables.py scale --device $DEV --jobs "$JOBS" \
            --out "$OUT/results" --quiet
    else
        cat > "$OUT/dry_scale.py" <<'EOF'
import sys
sys.path.insert(0, "experiments")
import tables
if __name__ == "__main__":
    tables.SCALE_POINTS = [dict(people=40, passes=1, n_layer=2, where="cpu"), dict(people=40, passes=1, where="cpu")]
    tables.scale_study("tiny", 0, sys.argv[1], "cpu", quiet=True, jobs=2)
EOF
        timeout "$left" $PY "$OUT/dry_scale.py" "$OUT/results"
    fi
else
    echo "no time left for the scale study ($left s)"
fi

step "done"
rm -rf "$OUT/results/work"
tar -czf "$OUT/gpu_results.tar.gz" -C "$OUT" results machine.txt gpu_check.txt 2>/dev/null
ls -la "$OUT/results"
echo "total $(elapsed) s"
