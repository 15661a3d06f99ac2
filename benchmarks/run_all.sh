#!/usr/bin/env bash
# Reproduce benchmarks/results/<machine>/ on this device (about 10 minutes on a 2-core laptop).
# Usage: benchmarks/run_all.sh [RUN_DIR_FOR_TORCH_BASELINE]
set -euo pipefail
cd "$(dirname "$0")/.."
machine=$(python -c "import platform,re,pathlib; t=pathlib.Path('/proc/cpuinfo').read_text() if pathlib.Path('/proc/cpuinfo').exists() else ''; m=re.search(r'model name\s*:\s*(.*)', t); print(re.sub(r'[^A-Za-z0-9]+','-', (m.group(1) if m else platform.processor() or 'cpu')).strip('-').lower() + '-' + str(__import__('os').cpu_count()) + 'cpu')")
out=benchmarks/results/$machine
mkdir -p "$out"
run=${1:-runs/default-simclr-convnext_atto}
dermedge bench --backends all --threads 1,2 --batch 8 --json "$out/bench.json" --md "$out/bench.md" --plot "$out/bench.png"
python benchmarks/targets.py --run "$run" --out "$out"
python benchmarks/soak.py --backend openvino --out "$out/soak.json"
python benchmarks/crosscheck.py --out "$out/crosscheck.json" || echo "crosscheck skipped"
echo "results in $out"
