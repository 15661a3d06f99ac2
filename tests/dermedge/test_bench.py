import json
from pathlib import Path

from dermedge.bench import stats_ms, timed_loop
from dermedge.cli import main


def test_bench_quick_json_has_the_fields(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    md = tmp_path / "b.md"
    code = main(
        [
            "bench",
            str(tiny_bundle),
            "--backends",
            "all",
            "--quick",
            "--threads",
            "1",
            "--json",
            str(out),
            "--md",
            str(md),
            "--plot",
            str(tmp_path / "b.png"),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["device"]["logical_cpus"] >= 1 and "onnxruntime" in report["device"]["versions"]
    assert "isa" in report["device"]
    rows = report["results"]
    assert {r["backend"] for r in rows} >= {"onnxruntime"}
    for r in rows:
        for key in (
            "cold_start_s",
            "first_inference_ms",
            "throughput_img_s",
            "peak_rss_mb",
            "artifact_bytes",
            "gate",
            "minimums_met",
        ):
            assert key in r, key
        assert set(r["latency_ms"]) >= {"p50", "p90", "p99", "mean", "min", "max", "cv", "n"}
        assert set(r["e2e_ms"]) == {"decode", "preprocess", "inference", "head", "total", "classify"}
        assert r["e2e_ms"]["classify"] > 0
        assert r["latency_ms"]["min"] <= r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    assert "| onnxruntime |" in md.read_text() and (tmp_path / "b.png").stat().st_size > 1000


def test_timed_loop_meets_minimums_or_says_so() -> None:
    times, met = timed_loop(lambda: None, 20, 0.01)
    assert met and len(times) >= 20
    times, met = timed_loop(lambda: None, 10**9, 0.0, cap_seconds=0.05)
    assert not met
    s = stats_ms([0.001, 0.002, 0.003])
    assert s["p50"] == 2.0 and s["n"] == 3
