#!/usr/bin/env bash
# 0.5.1's recipe with longer pre-training, on this project's 2-core CPU machines, as a queue that outlives a
# session: every step resumes from its last finished epoch (or returns at once when its output exists), so the
# same command continues the run in the next session as long as the run folders under runs/ are still there.
#
#   mkdir -p runs/logs && nohup nice -n 5 bash training/recipes/cpu_long.sh >> runs/logs/cpu_long-128.log 2>&1 &
#   bash training/recipes/cpu_long.sh status        # which steps are done, epochs, seconds an epoch, ETA
#
# Steps: (1) skin-aware SimCLR on ConvNeXt-atto at 112 px for EPOCHS epochs (one cosine schedule; about 200 s an
# epoch on 2 cores, so 128 epochs are about 7 h, three sessions); (2) 0.5.1's stage 2 (about 40 min); (3) 0.5.1's
# encoder recovered from the built-in bundle; (4) the yardstick and the cross-camera table beside 0.5.1, the colour
# histogram and random init (about 30 min); (5) the decision rule (training/recipes/cpu_long_rule.md), applied by
# benchmarks/decision_rule.py, whose verdict goes to the log and RESULTS/decision_ssl$EPOCHS.md; (6) only when
# rules 1-3 pass, rule 4: the candidate's bundle in RUNS/bundle-ssl$EPOCHS (export, INT8, gate, head, card; about
# 15 min; the built-in model is not touched), benchmarks/targets.py on it (ONNX Runtime FP32, as for 0.5.1; about
# 5 min; run it on an otherwise idle machine, or delete RESULTS/targets_ssl$EPOCHS and run the queue again), and
# the rule again with rule 4, into the same decision file. Replacing the built-in model stays a decision by hand.
#
# Settings, from the environment (defaults in brackets): EPOCHS [128], DATA [../shared/data], DERMEDGE
# [.venv/bin/dermedge], PYTHON [.venv/bin/python], RUNS [runs], RESULTS [benchmarks/results/<this CPU>],
# VERSION [0.7.0, the candidate bundle's version].
set -euo pipefail
# The whole script is one block, read before it runs: editing this file (a git pull) while a queue runs does not
# change what that queue does next.
{
cd "$(dirname "$0")/../.."
EPOCHS=${EPOCHS:-128}
DATA=${DATA:-../shared/data}
DERMEDGE=${DERMEDGE:-.venv/bin/dermedge}
PY=${PYTHON:-.venv/bin/python}
if [ -z "${RESULTS:-}" ]; then
    case "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')" in
        *EPYC*) RESULTS=benchmarks/results/amd-epyc-2cpu ;;
        *Xeon*) RESULTS=benchmarks/results/intel-xeon-2cpu ;;
        *) echo "unknown CPU: set RESULTS to a benchmarks/results/<cpu> folder" >&2; exit 2 ;;
    esac
fi
RUNS=${RUNS:-runs}
SSL=$RUNS/ssl$EPOCHS-atto112
FT=$RUNS/ft-ssl$EPOCHS-atto112
BASE=$RUNS/from-051
BUNDLE=$RUNS/bundle-ssl$EPOCHS
TARGETS=$RESULTS/targets_ssl$EPOCHS
VERSION=${VERSION:-0.7.0}

status() {  # read-only: what is done, from the run folders and the results folder
    "$PY" - "$SSL" "$FT" "$EPOCHS" "$RESULTS" "$BUNDLE" <<'PYEOF'
import csv, json, sys
from pathlib import Path
ssl, ft, epochs, results = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
bundle = Path(sys.argv[5])
def rows(path):
    return list(csv.DictReader(path.open())) if path.is_file() else []
pre = rows(ssl / "metrics.csv")
if pre:
    secs = sorted(float(r["seconds"]) for r in pre[-8:])
    per = secs[len(secs) // 2]
    left = epochs - int(pre[-1]["epoch"])
    print(f"{'pre-training':<21} {ssl}: epoch {pre[-1]['epoch']}/{epochs}, loss {float(pre[-1]['loss']):.4f}, "
          f"{per:.0f} s an epoch (median of the last {len(secs)}), about {left * per / 3600:.1f} h left")
else:
    print(f"{'pre-training':<21} {ssl}: not started")
vpath, cpath = ft / "val_macro_f1.csv", ft / "finetune_config.json"
val = [(int(e), float(f)) for e, f in (line.split(",") for line in vpath.read_text().split())] if vpath.is_file() else []
if val and cpath.is_file():
    cfg = json.loads(cpath.read_text())
    best_f1, best_epoch = max((f, -e) for e, f in val)  # the first epoch with the best score, as finetune keeps
    epoch = val[-1][0]
    over = epoch >= cfg["epochs"] or epoch + best_epoch >= cfg["patience"]
    print(f"{'stage 2':<21} {ft}: epoch {epoch}/{cfg['epochs']}, best validation macro-F1 {best_f1:.3f} at epoch "
          f"{-best_epoch}" + (" (finished)" if over else ""))
else:
    print(f"{'stage 2':<21} {ft}: not started")
outputs = [
    (f"encoders_ssl{epochs}", results / f"encoders_ssl{epochs}.json"),
    (f"cross_camera_ssl{epochs}", results / f"cross_camera_ssl{epochs}.json"),
    (f"decision_ssl{epochs}", results / f"decision_ssl{epochs}.md"),
    ("bundle (rule 4)", bundle / "report.json"),
    (f"targets_ssl{epochs}", results / f"targets_ssl{epochs}" / "targets.json"),
]
for name, path in outputs:
    print(f"{name:<21} {path}: " + ("written" if path.is_file() else "not yet"))
verdict = results / f"decision_ssl{epochs}.md"
if verdict.is_file():
    print(next((line.strip("*") for line in verdict.read_text().splitlines() if line.startswith("**Verdict")), ""))
PYEOF
}
if [ "${1:-}" = status ]; then status; exit 0; fi
[ -n "${1:-}" ] && { echo "usage: $0 [status]" >&2; exit 2; }
[ -d "$DATA" ] || { echo "no data at $DATA" >&2; exit 1; }
mkdir -p "$RUNS/logs" "$RESULTS"
echo "cpu_long: $(date -u +%FT%TZ) EPOCHS=$EPOCHS on $(lscpu | sed -n 's/^Model name: *//p')"

"$DERMEDGE" train --method simclr --arch convnext_atto --data "$DATA" --img-size 112 --epochs "$EPOCHS" \
    --batch-size 128 --lr 0.002 --num-workers 1 --out "$SSL" warmup_epochs=1 \
    "method_kwargs={temperature: 0.2}" augment=skin cache=true

"$DERMEDGE" finetune --checkpoint "$SSL" --data "$DATA" --out "$FT" --epochs 36 --patience 10 --batch-size 64 \
    --lr-encoder 0.0005 --lr-head 0.002 --label-smoothing 0.1 --class-weight-power 0.5 --head-warmup-epochs 0 \
    --augment skin --ema 0.998 --num-workers 1

[ -f "$BASE/encoder.safetensors" ] ||
    "$DERMEDGE" import-checkpoint --format bundle dermedge/models/default --out "$BASE"

table() {  # table NAME SCRIPT: skipped when its JSON exists (delete it to measure again)
    [ -f "$RESULTS/$1.json" ] && { echo "cpu_long: $RESULTS/$1.json exists, kept"; return; }
    "$PY" "$2" --data "$DATA" --cache "$RUNS/yardstick-cache" --checkpoint "$BASE" --checkpoint "$SSL" \
        --checkpoint "$FT" --pooled-stages 2,1 --plus-histogram --out "$RESULTS/$1"
}
table "encoders_ssl$EPOCHS" benchmarks/encoders.py
table "cross_camera_ssl$EPOCHS" benchmarks/cross_camera.py

rule() {  # the decision rule; rules 1-3, and rule 4 when given --bundle and --targets
    "$PY" benchmarks/decision_rule.py --yardstick "$RESULTS/encoders_ssl$EPOCHS.json" \
        --cross-camera "$RESULTS/cross_camera_ssl$EPOCHS.json" --baseline "$(basename "$BASE")" \
        --candidate "$(basename "$FT")" --out "$RESULTS/decision_ssl$EPOCHS.md" "$@"
}
if rule; then  # rule 4: the candidate's bundle (not the built-in one), its runtime targets and INT8 gate
    [ -f "$BUNDLE/report.json" ] ||  # written last
        "$PY" -m dermedge.export.default_model --run "$FT" --data "$DATA" --out "$BUNDLE" --full-out "$BUNDLE-full" \
            --baselines --version "$VERSION" --colour-histogram 8 --pooled-stages 2,1 \
            --yardstick "$RESULTS/encoders_ssl$EPOCHS.json"
    [ -f "$TARGETS/targets.json" ] ||
        "$PY" benchmarks/targets.py --bundle "$BUNDLE" --backend onnxruntime --precision fp32 --run "$FT" \
            --out "$TARGETS"
    rule --bundle "$BUNDLE" --targets "$TARGETS/targets.json"
else
    echo "cpu_long: rules 1-3 do not all pass (above): no bundle is built, the built-in model stays"
fi
exit
}
