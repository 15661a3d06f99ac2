"""``dermedge bench``: latency, throughput, cold start, memory and end-to-end timings on this device.

Each backend x precision x threads case runs in a fresh process, so cold start and peak RSS are
honest and cases do not disturb each other. Timings use ``time.perf_counter`` after a warm-up and
report p50/p90/p99, mean, min, max and the coefficient of variation (SingleStream style), and
whether the minimum query count / duration were met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MIN_QUERIES, MIN_SECONDS = 1000, 60.0
QUICK_QUERIES, QUICK_SECONDS = 50, 2.0


# -- device facts ----------------------------------------------------------------------------
def device_info() -> dict[str, Any]:
    """CPU model, cores, ISA flags, GPU (if any) and versions of every installed backend."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
    }
    from dermedge.cpu import cpu_model, isa_summary, native_bf16

    info["cpu_model"] = cpu_model()
    info["isa"] = isa_summary()
    info["native_bf16"] = native_bf16()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            info["gpu"] = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    from importlib import metadata

    versions: dict[str, str] = {}
    from dermedge.backends import BACKENDS

    runtimes = [d for entry in BACKENDS.values() for d in entry.distributions]
    for dist in ("numpy", "opencv-python-headless", "opencv-python", *runtimes, "torch"):
        try:
            versions[dist] = metadata.version(dist)  # reads metadata only: nothing is imported
        except metadata.PackageNotFoundError:
            continue
    info["versions"] = versions
    return info


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). ``ru_maxrss`` is not used: on Linux it survives exec()
    and would report the parent's peak for a freshly started benchmark process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timings(
    cold: float,
    first: float,
    lat: list[float],
    min_q: int,
    min_s: float,
    met: bool,
    batch: int,
    tput: list[float],
    e2e: dict[str, list[float]],
) -> dict[str, Any]:
    """The timing fields every bench row has (dermedge backends and the torch baseline alike)."""
    return {
        "cold_start_s": cold,
        "first_inference_ms": first * 1000,
        "latency_ms": stats_ms(lat),
        "min_queries": min_q,
        "min_seconds": min_s,
        "minimums_met": met,
        "throughput_img_s": batch / float(np.median(tput)),
        "e2e_ms": {k: stats_ms(v)["p50"] for k, v in e2e.items()},
    }


def stats_ms(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1000.0
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "cv": float(a.std() / a.mean()) if a.mean() > 0 else 0.0,
        "n": int(a.size),
    }


def timed_loop(
    fn: Any, min_queries: int, min_seconds: float, warmup: int = 5, cap_seconds: float | None = None
) -> tuple[list[float], bool]:
    """Call ``fn`` until both minimums are met (or ``cap_seconds`` passes); returns (durations, met)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    cap = cap_seconds if cap_seconds is not None else max(min_seconds * 3, 600.0)
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(times) >= min_queries and elapsed >= min_seconds:
            return times, True
        if elapsed >= cap:
            return times, False


def synthetic_jpeg(width: int = 1024, height: int = 768, seed: int = 0) -> bytes:
    """A skin-toned photo-like JPEG (smooth noise, a dark lesion, sensor noise) for timing decode."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.normal(0, 1, (height // 32 + 1, width // 32 + 1, 3)).astype(np.float32)
    base = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) * 12 + np.array(
        [120, 150, 200], np.float32
    )
    yy, xx = np.mgrid[:height, :width]
    lesion = ((yy - height / 2) ** 2 / (height / 6) ** 2 + (xx - width / 2) ** 2 / (width / 7) ** 2) < 1
    base[lesion] *= 0.45
    base += rng.normal(0, 6, base.shape).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", np.clip(base, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return buf.tobytes()


# -- one case (runs in a child process) ------------------------------------------------------
def run_case(
    bundle: str | None,
    backend: str,
    precision: str | None,
    threads: int | None,
    batch: int,
    quick: bool,
    jpeg_paths: list[str],
    cache_dir: str | None,
) -> dict[str, Any]:
    """Measure one backend x precision x threads case in this process, through the public API only:
    ``Model.embed_tensor`` for the encoder, the ``dermedge.preprocess`` stages and ``Model.classify`` end to end."""
    from dermedge.loading import load_model

    min_q, min_s = (QUICK_QUERIES, QUICK_SECONDS) if quick else (MIN_QUERIES, MIN_SECONDS)
    t0 = time.perf_counter()
    model = load_model(bundle, backend=backend, precision=precision, threads=threads, cache_dir=cache_dir)
    cold = time.perf_counter() - t0
    x1 = np.random.default_rng(0).normal(size=(1, 3, *model.manifest.input.size)).astype(np.float32)
    t0 = time.perf_counter()
    model.embed_tensor(x1)
    first = time.perf_counter() - t0
    lat, met = timed_loop(lambda: model.embed_tensor(x1), min_q, min_s)
    xb = np.repeat(x1, batch, axis=0)
    tput_times, _ = timed_loop(lambda: model.embed_tensor(xb), max(3, min_q // 20), min_s / 2)
    images = [Path(p).read_bytes() for p in jpeg_paths] or [synthetic_jpeg()]
    names = [Path(p).name for p in jpeg_paths] or ["synthetic-1024x768.jpg"]
    e2e = _e2e_stages(model, images, names, max(10, min_q // 5))
    art = model.artifact
    result = {
        "bundle": model.manifest.name,
        "version": model.manifest.version,
        "arch": model.manifest.encoder.arch,
        "backend": art.backend,
        "precision": art.precision,
        "inference_precision": model.inference_precision,
        "threads": threads,
        "batch": batch,
        "selected_because": model.selection_reason,
        "backend_info": {k: v for k, v in model.info()["backend"].items() if k != "selected_because"},
        **_timings(cold, first, lat, min_q, min_s, met, batch, tput_times, e2e),
        "e2e_images": names[:3],
        "peak_rss_mb": peak_rss_mb(),
        "artifact_bytes": sum(f.bytes for f in art.files),
        "gate": art.gate,
        "flops": model.manifest.encoder.flops,
    }
    model.close()
    return result


def _e2e_stages(model: Any, images: list[bytes], names: list[str], n: int) -> dict[str, list[float]]:
    """Seconds per stage of one photo (decode, preprocess, encoder, head) with the public functions, and
    ``classify``: the single ``Model.classify(bytes)`` call an app makes, timed on its own. 3 warm-up rounds."""
    from dermedge.preprocess import decode_image, prepare

    spec = model.manifest.input
    e2e: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "inference", "head", "total", "classify")}
    for i in range(n + 3):
        data = images[i % len(images)]
        a = time.perf_counter()
        rgb = decode_image(data, names[i % len(names)], target_short_side=spec.resize_size)
        b = time.perf_counter()
        tensor = prepare(rgb, spec)[None]
        c = time.perf_counter()
        emb = model.embed_tensor(tensor)
        d = time.perf_counter()
        if model.head is not None:
            model.classify_embeddings(emb)
        e = time.perf_counter()
        (model.classify if model.head is not None else model.embed)(data)
        f = time.perf_counter()
        if i >= 3:
            for k, v in zip(e2e, (b - a, c - b, d - c, e - d, e - a, f - e)):
                e2e[k].append(v)
    return e2e


def run_torch_case(
    bundle: str | None, run_dir: str, threads: int | None, batch: int, quick: bool, jpeg_paths: list[str]
) -> dict[str, Any]:
    """Baseline rows: the paper's path (``dermedge.training.baseline.PaperPath``: PIL decode, torchvision
    transforms, PyTorch eager FP32 of the same encoder), measured like :func:`run_case`. Needs ``dermedge[train]``."""
    import numpy as np

    from dermedge.bundle import open_bundle
    from dermedge.loading import default_bundle_path
    from dermedge.training.baseline import PaperPath

    with open_bundle(bundle or default_bundle_path()) as b:
        m = b.manifest
    min_q, min_s = (QUICK_QUERIES, QUICK_SECONDS) if quick else (MIN_QUERIES, MIN_SECONDS)
    enc = m.encoder
    path = PaperPath.load(run_dir, m.input, threads, enc.colour_histogram_bins, enc.pooled_stages, enc.fine_stages)
    x1 = np.random.default_rng(0).normal(size=(1, 3, *m.input.size)).astype(np.float32)
    t0 = time.perf_counter()
    path.forward(x1)
    first = time.perf_counter() - t0
    lat, met = timed_loop(lambda: path.forward(x1), min_q, min_s)
    xb = np.repeat(x1, batch, axis=0)
    tput, _ = timed_loop(lambda: path.forward(xb), max(3, min_q // 20), min_s / 2)
    images = [Path(p).read_bytes() for p in jpeg_paths] or [synthetic_jpeg()]
    e2e: dict[str, list[float]] = {"decode": [], "preprocess": [], "inference": [], "head": [], "total": []}
    for i in range(max(10, min_q // 5) + 3):
        _, stages = path.embed_file(images[i % len(images)])
        if i >= 3:  # warm-up
            for k, v in {**stages, "head": 0.0, "total": sum(stages.values())}.items():
                e2e[k].append(v)
    import torch

    return {
        "bundle": m.name,
        "version": m.version,
        "arch": m.encoder.arch,
        "backend": "torch-eager (paper path: PIL + torchvision)",
        "precision": "fp32",
        "threads": threads,
        "batch": batch,
        "selected_because": "baseline",
        "backend_info": {"backend": "torch", "version": torch.__version__},
        **_timings(path.load_s, first, lat, min_q, min_s, met, batch, tput, e2e),
        "e2e_images": [],
        "peak_rss_mb": peak_rss_mb(),
        "artifact_bytes": 0,
        "gate": {},
        "flops": m.encoder.flops,
    }


# -- driver ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", nargs="?", help="bundle (default: the built-in model)")
    p.add_argument("--backends", default="auto", help="auto, all, or a comma list (onnxruntime,openvino,tensorrt)")
    p.add_argument("--precisions", default="", help="comma list (default: every precision the bundle has per backend)")
    p.add_argument("--threads", default="", help="comma list of thread counts (default: the runtime's choice)")
    p.add_argument("--batch", default="8", help="batch size(s) for the throughput figure, comma list")
    p.add_argument("--images", nargs="*", default=[], help="JPEG files for the end-to-end timing (default: synthetic)")
    p.add_argument(
        "--quick", action="store_true", help=f"{QUICK_QUERIES} queries / {QUICK_SECONDS:.0f} s per case (CI, smoke)"
    )
    p.add_argument("--json", nargs="?", const="-", metavar="OUT", help="write JSON (to stdout without a file name)")
    p.add_argument("--md", metavar="OUT", help="write a markdown table")
    p.add_argument("--plot", metavar="OUT.png", help="write a latency bar chart (needs matplotlib)")
    p.add_argument("--cache-dir", help="compiled-model cache (default: ~/.cache/dermedge)")
    p.add_argument(
        "--torch-run",
        help="training run of the same encoder: adds PyTorch eager + paper-preprocessing "
        "baseline rows (needs torch, torchvision, timm)",
    )


def _cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    from dermedge.backends import available_backends, pick_auto
    from dermedge.bundle import open_bundle
    from dermedge.loading import default_bundle_path

    with open_bundle(args.bundle or default_bundle_path()) as b:
        arts = [(a.backend, a.precision) for a in b.manifest.artifacts]
    have = {be for be, _ in arts}
    if args.backends == "auto":
        backends = [pick_auto(None, have)[0]]
    elif args.backends == "all":
        backends = [be for be in available_backends() if be in have]
    else:
        backends = [s.strip() for s in args.backends.split(",") if s.strip()]
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    threads: list[int | None] = [int(t) for t in args.threads.split(",") if t.strip()] or [None]
    batches = [int(x) for x in str(args.batch).split(",") if x.strip()]
    cases = []
    from dermedge.cpu import native_bf16

    for be in backends:
        # bf16 runs only on CPUs with native BF16; by default it is benchmarked only there
        precs = precisions or sorted({p for b2, p in arts if b2 == be and (p != "bf16" or native_bf16())})
        for prec in precs:
            if (be, prec) not in arts:
                continue
            for th in threads:
                for bs in batches:
                    cases.append({"backend": be, "precision": prec, "threads": th, "batch": bs})
    if getattr(args, "torch_run", None):
        for th in threads:
            cases.append(
                {"backend": "torch", "precision": "fp32", "threads": th, "batch": batches[0], "run": args.torch_run}
            )
    return cases


def _to_markdown(rows: list[dict[str, Any]], dev: dict[str, Any]) -> str:
    lines = [
        f"Device: {dev.get('cpu_model')} ({dev.get('logical_cpus')} logical CPUs), "
        f"ISA {', '.join(k for k, v in dev.get('isa', {}).items() if v)}; "
        + ", ".join(f"{k} {v}" for k, v in dev["versions"].items()),
        "",
        "| backend | precision | threads | cold start s | first ms | p50 ms | p90 ms | p99 ms | cv | "
        "batch | img/s | e2e ms (decode+prep+infer+head) | peak RSS MB | size MB | min met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['backend']} | {r['precision']} | {r.get('threads')} | error: {r['error']} |" + " |" * 11
            )
            continue
        lat, e = r["latency_ms"], r["e2e_ms"]
        lines.append(
            f"| {r['backend']} | {r['precision']} (runs {r.get('inference_precision', '?')}) | "
            f"{r['threads'] or 'default'} | {r['cold_start_s']:.2f} | "
            f"{r['first_inference_ms']:.1f} | {lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | "
            f"{lat['cv']:.2f} | "
            f"{r['batch']} | {r['throughput_img_s']:.0f} | {e['total']:.1f} ({e['decode']:.1f}+{e['preprocess']:.1f}+"
            f"{e['inference']:.1f}+{e['head']:.2f}) | {r['peak_rss_mb']:.0f} | {r['artifact_bytes'] / 1e6:.1f} | "
            f"{'yes' if r['minimums_met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    labels = [f"{r['backend']}\n{r['precision']}/{r['threads'] or 'def'}t" for r in ok]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(ok)), 4))
    p50 = [r["latency_ms"]["p50"] for r in ok]
    p90 = [r["latency_ms"]["p90"] for r in ok]
    ax.bar(labels, p90, color="#c9d7ea", label="p90")
    ax.bar(labels, p50, color="#3b6ea8", label="p50")
    ax.set_ylabel("batch-1 encoder latency (ms)")
    ax.set_title(f"{ok[0]['bundle']} ({ok[0]['arch']})" if ok else "no results")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def run(args: argparse.Namespace) -> int:
    cases = _cases(args)
    if not cases:
        print("error: no backend/precision of the bundle matches the request", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for case in cases:
        spec = json.dumps(
            {**case, "bundle": args.bundle, "quick": args.quick, "images": args.images, "cache_dir": args.cache_dir}
        )
        proc = subprocess.run([sys.executable, "-m", "dermedge.bench", spec], capture_output=True, text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            rows.append({**case, "error": err})
            print(f"{case['backend']}/{case['precision']}: {err}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        if sys.stderr.isatty() or not args.json:
            lat = row["latency_ms"]
            print(
                f"{row['backend']}/{row['precision']} threads={row['threads'] or 'default'}: p50 {lat['p50']:.2f} ms, "
                f"p90 {lat['p90']:.2f} ms, {row['throughput_img_s']:.0f} img/s at batch {row['batch']}, "
                f"cold start {row['cold_start_s']:.2f} s, e2e {row['e2e_ms']['total']:.1f} ms, "
                f"peak RSS {row['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
            )
    dev = device_info()
    report = {
        "device": dev,
        "quick": args.quick,
        "results": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.json == "-":
        print(json.dumps(report, indent=1))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(_to_markdown(rows, dev))
    if not args.json:
        print(_to_markdown(rows, dev))
    if args.plot:
        _plot(rows, args.plot)
    return 0 if all("error" not in r for r in rows) else 3


if __name__ == "__main__":
    case = json.loads(sys.argv[1])
    if case["backend"] == "torch":
        print(
            json.dumps(
                run_torch_case(
                    case["bundle"], case["run"], case["threads"], case["batch"], case["quick"], case["images"]
                )
            )
        )
        sys.exit(0)
    out = run_case(
        case["bundle"],
        case["backend"],
        case["precision"],
        case["threads"],
        case["batch"],
        case["quick"],
        case["images"],
        case["cache_dir"],
    )
    print(json.dumps(out))
