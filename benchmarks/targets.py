"""Measure the speed targets of the benchmark issue on this machine, all side by side in one run.

    python benchmarks/targets.py [--bundle B] [--run RUN] [--photo P] --out benchmarks/results/<machine>

Rows (each a measured value, its target and the ratio):
- machine peaks: fp32 (numpy 2048^3 matmul) and int8 (ONNX Runtime MatMulInteger u8 x s8) at 2 threads;
- default encoder INT8 batch-1 latency vs its INT8 compute floor (FLOPs / int8 peak), target <= 1.5x;
- a 12-MP phone JPEG (4032x3024, upscaled real photo + sensor noise, 2-4 MB) -> prediction end to end, vs
  the floor (OpenCV reduced-size decode of that file alone + the encoder alone), target <= 1.25x, and vs
  the paper's path (PIL full decode + torchvision Resize/CenterCrop + PyTorch eager FP32 of the same
  encoder; needs torch + the training run), target >= 3.5x faster;
- cold start (load_model, OpenVINO cache warm) <= 0.5 s; peak RSS <= 250 MB (fresh process);
- folder embedding of 224-px JPEGs >= 150 images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import dermedge
from dermedge.bench import device_info, peak_rss_mb, stats_ms, timed_loop

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def median_ms(fn: Any, n: int = 30, warmup: int = 3) -> float:
    times, _ = timed_loop(fn, n, 0.0, warmup=warmup)
    return stats_ms(times)["p50"]


def peaks(threads: int) -> dict[str, float]:
    """GFLOP/s (fp32, numpy) and GOP/s (int8, ORT MatMulInteger) of a 2048^3 matmul."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 2048
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    fp32 = 2 * n**3 / (median_ms(lambda: a @ b, 10, 2) / 1000) / 1e9
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "mmi",
        [
            helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("B", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ua = np.random.randint(0, 255, (n, n), dtype=np.uint8)
    sb = np.random.randint(-127, 127, (n, n), dtype=np.int8)
    int8 = 2 * n**3 / (median_ms(lambda: sess.run(None, {"A": ua, "B": sb}), 10, 2) / 1000) / 1e9
    return {"fp32_gflops": fp32, "int8_gops": int8}


def make_phone_jpeg(source: Path | None, out: Path) -> Path:
    """4032x3024 JPEG from a real photo: upscaled, with sensor-like noise, aiming at 2-4 MB."""
    if source is not None and source.is_file():
        img = cv2.imread(str(source))
    else:
        from dermedge.bench import synthetic_jpeg

        img = cv2.imdecode(np.frombuffer(synthetic_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    big = cv2.resize(img, (4032, 3024), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    rng = np.random.default_rng(0)
    for sigma in (3.0, 4.5, 6.0, 8.0):
        noisy = np.clip(big + rng.normal(0, sigma, big.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if len(buf) >= 2_000_000:
            break
    out.write_bytes(buf.tobytes())
    return out


def paper_path(run: Path, photo: Path, spec: Any, head: Any, threads: int, encoder: Any = None) -> float | None:
    """The paper's path (dermedge.training.baseline.PaperPath) + the head, median ms; None without torch."""
    try:
        from dermedge.training.baseline import PaperPath
    except ImportError:
        return None
    bins, stages, fine = (
        (encoder.colour_histogram_bins, encoder.pooled_stages, encoder.fine_stages)
        if encoder is not None
        else (0, (), ())
    )
    path = PaperPath.load(run, spec, threads, bins, stages, fine)
    data = photo.read_bytes()
    return median_ms(lambda: head.probabilities(path.embed_file(data)[0]), 10, 2)


def child_cold_start(bundle: str | None, backend: str, precision: str, threads: int, cache: str) -> dict[str, float]:
    code = f"""
import json, time
t0 = time.perf_counter()
import dermedge
m = dermedge.load_model(
    {bundle!r}, backend={backend!r}, precision={precision!r}, threads={threads}, cache_dir={cache!r}
)
t1 = time.perf_counter()
import numpy as np
h, w = m.manifest.input.size
m.classify(np.full((h, w, 3), 120, np.uint8))
for _ in range(200):
    m._backend.run(np.zeros((1, 3, h, w), np.float32))
from dermedge.bench import peak_rss_mb
print(json.dumps({{"import_and_load_s": t1 - t0, "peak_rss_mb": peak_rss_mb()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="default: the built-in bundle")
    p.add_argument("--backend", default="openvino")
    p.add_argument("--precision", help="default: the fastest the bundle has for --backend (INT8 if it ships one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--run", help="training run of the same encoder, for the PyTorch/paper baseline rows")
    p.add_argument("--photo", default=str(SHARED / "pad_ufes_20" / "images" / "PAT_1006_53_716.jpg"))
    p.add_argument("--folder", default=str(SHARED / "ham10000" / "images"))
    p.add_argument("--folder-limit", type=int, default=600)
    p.add_argument("--out", required=True)
    return p


def main() -> int:
    args = build_parser().parse_args()
    if args.precision is None:
        from dermedge.bundle import open_bundle
        from dermedge.loading import default_bundle_path

        with open_bundle(args.bundle or default_bundle_path()) as b:
            args.precision = b.manifest.find_artifact(args.backend, None).precision
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    cache = str(tmp / "cache")
    rows: list[dict[str, Any]] = []

    def row(name: str, measured: float, target: float, unit: str, better: str, note: str = "") -> None:
        ratio = measured / target if target else float("nan")
        ok = measured <= target if better == "lower" else measured >= target
        rows.append(
            {
                "target": name,
                "measured": measured,
                "goal": target,
                "unit": unit,
                "ratio": ratio,
                "met": bool(ok),
                "note": note,
            }
        )

    pk = peaks(args.threads)
    model = dermedge.load_model(
        args.bundle, backend=args.backend, precision=args.precision, threads=args.threads, cache_dir=cache
    )
    spec = model.manifest.input
    flops = model.manifest.encoder.flops or 0
    h, w = spec.size
    x = np.random.default_rng(0).normal(size=(1, 3, h, w)).astype(np.float32)
    enc_ms = median_ms(lambda: model._backend.run(x), 300, 10)
    peak = pk["int8_gops"] if args.precision == "int8" else pk["fp32_gflops"]
    floor = flops / (peak * 1e9) * 1000
    floor_int8 = flops / (pk["int8_gops"] * 1e9) * 1000
    row(
        f"default encoder {args.precision.upper()} batch-1 latency vs its {args.precision.upper()} compute floor "
        "(target written for INT8)",
        enc_ms,
        1.5 * floor,
        "ms",
        "lower",
        f"floor {floor:.3f} ms = {flops / 1e9:.3f} GFLOPs / {peak:.0f} G(FL)OP/s; INT8 floor {floor_int8:.3f} ms",
    )
    photo = make_phone_jpeg(Path(args.photo), tmp / "phone_12mp.jpg")
    e2e = median_ms(lambda: model.classify(photo), 30, 3)
    data = photo.read_bytes()
    from dermedge.preprocess import reduced_decode_factor

    factor = reduced_decode_factor(4032, 3024, spec.resize_size)
    flag = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2}.get(
        factor, cv2.IMREAD_COLOR
    )
    decode_ms = median_ms(lambda: cv2.imdecode(np.frombuffer(photo.read_bytes(), np.uint8), flag), 30, 3)
    full_decode_ms = median_ms(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), 10, 2)
    floor_e2e = decode_ms + enc_ms
    row(
        "12-MP phone JPEG -> prediction vs floor (reduced decode + encoder)",
        e2e,
        1.25 * floor_e2e,
        "ms",
        "lower",
        f"floor {floor_e2e:.1f} ms = decode 1/{factor} {decode_ms:.1f} + encoder {enc_ms:.1f}; "
        f"full decode {full_decode_ms:.0f} ms; "
        f"file {len(data) / 1e6:.1f} MB",
    )
    if args.run:
        paper = paper_path(Path(args.run), photo, spec, model.head, args.threads, model.manifest.encoder)
        if paper is not None:
            row(
                "speed-up over the paper's path (PIL + torchvision + torch eager FP32)",
                paper / e2e,
                3.5,
                "x",
                "higher",
                f"paper path {paper:.1f} ms vs dermedge {e2e:.1f} ms, same photo, same encoder weights",
            )
    model.close()
    cold = child_cold_start(args.bundle, args.backend, args.precision, args.threads, cache)  # fills the cache
    cold = child_cold_start(args.bundle, args.backend, args.precision, args.threads, cache)
    row(f"cold start (import + load_model, {args.backend} cache warm)", cold["import_and_load_s"], 0.5, "s", "lower")
    row("peak RSS after 200 inferences", cold["peak_rss_mb"], 250, "MB", "lower")
    files = sorted(Path(args.folder).glob("*.jpg"))[: args.folder_limit]
    if files:
        with dermedge.load_model(
            args.bundle, backend=args.backend, precision=args.precision, threads=args.threads, cache_dir=cache
        ) as m:
            list(m.iter_results(files[:32], batch_size=32))
            t0 = time.perf_counter()
            n = sum(1 for r in m.iter_results(files, batch_size=32) if r.ok)
            rate = n / (time.perf_counter() - t0)
        row(f"folder embedding ({n} real {Path(args.folder).parent.name} JPEGs)", rate, 150, "img/s", "higher")
    report = {
        "device": device_info(),
        "peaks": pk,
        "rows": rows,
        "bundle": args.bundle or "default",
        "backend": args.backend,
        "precision": args.precision,
        "threads": args.threads,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "self_peak_rss_mb": peak_rss_mb(),
    }
    (out / "targets.json").write_text(json.dumps(report, indent=1) + "\n")
    md = [
        f"Targets on {report['device'].get('cpu_model')} ({report['device'].get('logical_cpus')} CPUs, "
        f"{', '.join(k for k, v in report['device'].get('isa', {}).items() if v)}), {args.backend}/{args.precision}, "
        f"{args.threads} threads. Peaks: fp32 {pk['fp32_gflops']:.0f} GFLOP/s, int8 {pk['int8_gops']:.0f} GOP/s.",
        "",
        "| target | measured | goal | ratio | met | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sign = "<=" if r["target"].startswith(("default", "12-MP", "cold", "peak")) else ">="
        md.append(
            f"| {r['target']} | {r['measured']:.2f} {r['unit']} | {sign} "
            f"{r['goal']:.2f} {r['unit']} | {r['ratio']:.2f} | {'yes' if r['met'] else '**no**'} | {r['note']} |"
        )
    (out / "targets.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
