#!/usr/bin/env bash
# The paper's shape probed: GPT-2 small (12 x 768, `--preset paper`) at N people (default 10,000), the storage
# question of Results 4-5 at the paper's depth and width. For each setting in SETTINGS (default the augmented
# multi5+permute+fullname, then single):
#   1. generate N people; pretrain PASSES passes (bioS-single-sized, so every setting gets the same compute; the
#      paper's ~540 at N = 100,000) at the paper preset's optimiser;
#   2. eval the pretrained model: memorisation of P_train / P_test biographies (the paper's rule: >= 99%);
#   3. the Q-probe after every block and the P-probe after the last (`probe --layer K`, PROBE_STEPS steps), and the
#      causal check (`probe --kind lookup`);
#   4. QA finetuning on P_train (the paper preset's optimiser, EPOCHS passes) and eval: QA P_test.
# One setting takes about 5-8 minutes on one H100/H200 (the pretraining ~0.65M tokens a pass at ~0.5-0.7M tokens/s):
# run one setting a call, e.g. SETTINGS=multi5+permute+fullname. Installs nothing, needs no network, writes every
# result under OUT (default gpu_out/ where it is called) as it comes, and stops a setting's remaining steps at
# DEADLINE seconds (a step cut there is reported, never read as finished). Without a CUDA GPU it stops at once with
# one line (exit 1). DRY=1 runs every step at toy sizes on the CPU.
#
#     SETTINGS=multi5+permute+fullname bash bench/gpu_paper_shape.sh [OUT]
set -uo pipefail
OUT=$(realpath -m "${1:-${OUT:-gpu_out}}")  # before the cd: relative to where it was called from
cd "$(dirname "$0")/.."
mkdir -p "$OUT/results"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
step() { echo; echo "=== [$(elapsed) s] $*"; }
SETTINGS=${SETTINGS:-multi5+permute+fullname single}

if [ -z "${DRY:-}" ]; then
    $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_paper_shape: no CUDA GPU here')" \
        || exit 1
    DEV=cuda; PRESET=paper; N=${N:-10000}; PASSES=${PASSES:-200}; PROBE_STEPS=${PROBE_STEPS:-300}
    EPOCHS=${EPOCHS:-10}; DEADLINE=${DEADLINE:-570}; N_LAYER=12
else  # toy sizes on the CPU: the script's plumbing, not its numbers
    DEV=cpu; PRESET=tiny; N=${N:-100}; PASSES=${PASSES:-2}; PROBE_STEPS=${PROBE_STEPS:-2}
    EPOCHS=${EPOCHS:-1}; DEADLINE=${DEADLINE:-900}; N_LAYER=1
fi
in_time() { [ "$(elapsed)" -lt "$DEADLINE" ] || { echo "past the deadline ($DEADLINE s): $*"; false; }; }
left() { local l=$(( DEADLINE - $(elapsed) )); echo $(( l > 0 ? l : 1 )); }  # timeout 0: no limit

step "machine"
{ nvidia-smi 2>/dev/null || true; git rev-parse HEAD 2>/dev/null; $PY -c "import torch; print('torch', torch.__version__,
'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"; } | tee "$OUT/machine.txt"

for S in $SETTINGS; do
    W=$OUT/work/$S; R=$OUT/results/$S; mkdir -p "$R"
    step "$S: generate $N people, pretrain $PASSES passes ($PRESET preset)"
    $PY bioknow.py generate --out "$W/data" --people "$N" --aug "$S" --seed 0 --force --quiet > "$R/generate.json"
    in_time pretraining || continue
    timeout "$(left)" $PY bioknow.py train --data "$W/data" --out "$W/run" --preset $PRESET \
        --passes "$PASSES" --device $DEV --force --quiet > "$R/train.json"
    rc=$?
    for f in log.jsonl config.json; do [ -f "$W/run/$f" ] && cp "$W/run/$f" "$R/train_$f"; done
    # a checkpoint is saved mid-run too: only a run that ended well is a pretrained model
    [ $rc -eq 0 ] || { echo "$S: pretraining did not finish (exit $rc: 124 is the deadline)"; continue; }
    $PY bioknow.py eval --run "$W/run" --data "$W/data" --device $DEV --quiet --out "$R/pretrained_eval.json" \
        > /dev/null
    $PY -c "import json, sys; r = json.load(open(sys.argv[1])); print('memorised P_train / P_test',
r['memorization_p_train']['mean'], r['memorization_p_test']['mean'])" "$R/pretrained_eval.json"

    step "$S: Q-probe after every block, P-probe after the last, the causal check"
    for K in $(seq 0 $N_LAYER); do
        kind=q; [ "$K" -eq "$N_LAYER" ] && kind=both
        in_time "probe --layer $K" && $PY bioknow.py probe --run "$W/run" --data "$W/data" --kind $kind --layer "$K" \
            --steps "$PROBE_STEPS" --device $DEV --quiet --out "$R/probe_layer$K.json" > /dev/null
    done
    in_time lookup && $PY bioknow.py probe --run "$W/run" --data "$W/data" --kind lookup --device $DEV --quiet \
        --out "$R/lookup.json" > /dev/null

    step "$S: QA finetuning on P_train, $EPOCHS epochs; eval on P_test"
    in_time finetuning || continue
    timeout "$(left)" $PY bioknow.py finetune --run "$W/run" --data "$W/data" --out "$W/qa" \
        --preset $PRESET --epochs "$EPOCHS" --device $DEV --force --quiet > "$R/finetune.json"
    rc=$?
    [ $rc -eq 0 ] || { echo "$S: finetuning did not finish (exit $rc: 124 is the deadline)"; continue; }
    $PY bioknow.py eval --run "$W/qa" --data "$W/data" --device $DEV --quiet --out "$R/qa_eval.json" \
        > /dev/null
done

step "done"
rm -rf "$OUT/work"
echo "total $(elapsed) s"
