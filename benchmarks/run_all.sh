#!/usr/bin/env bash
# Reproduce benchmarks/results/<machine>/ on this device (about 10 minutes on a 2-core laptop).
# Usage: benchmarks/run_all.sh [RUN_DIR_FOR_TORCH_BASELINE]
set -euo pipefail
cd "$(dirname "$0")/.."
machine=$(python - <<'PY'
import os, pathlib, platform, re
info = pathlib.Path("/proc/cpuinfo")
m = re.search(r"model name\s*:\s*(.*)", info.read_text()) if info.exists() else None
name = m.group(1) if m else platform.processor() or "cpu"
name = re.sub(r"\((R|TM)\)|\b(Processor|CPU)\b|@.*$", " ", name, flags=re.I)  # "Intel(R) Xeon(R) Processor" -> intel-xeon
print(re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() + f"-{os.cpu_count()}cpu")
PY
)
out=benchmarks/results/$machine
mkdir -p "$out"
run=${1:-runs/from-default}
# the PyTorch rows need the built-in encoder as a training checkpoint: recover it from the bundle (exact, checked)
[ -f "$run/encoder.safetensors" ] || dermedge import-checkpoint --format bundle dermedge/models/default --out "$run"
dermedge bench --backends all --threads 1,2 --batch 8 --json "$out/bench.json" --md "$out/bench.md" --plot "$out/bench.png"
python benchmarks/targets.py --backend onnxruntime --precision fp32 --run "$run" --out "$out/targets"
python benchmarks/soak.py --backend openvino --out "$out/soak.json"
python benchmarks/crosscheck.py --precision fp32 --out "$out/crosscheck.json" || echo "crosscheck skipped"
echo "results in $out"
