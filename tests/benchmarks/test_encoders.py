"""The yardstick's protocols separate informative features from noise (synthetic features, no images)."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from encoders import (  # noqa: E402
    C_GRID,
    Tasks,
    _cached,
    _choose_c,
    delta_plot,
    delta_table,
    internal_task,
    paired_deltas,
    per_class_table,
    sd198_task,
    table,
    with_histogram,
)

from dermedge.datasets import Sample  # noqa: E402


def _tasks(n_int: int = 400, n_sd: int = 120) -> Tasks:
    rng = np.random.default_rng(0)
    labels = ["BCC", "MEL", "NEV"]
    samples, y, groups, sources = [], [], [], []
    for i in range(n_int):
        lab = i % 3
        src = "pad_ufes_20" if i % 4 == 0 else "ham10000"
        samples.append(Sample(f"/x/{i}.jpg", labels[lab], {"source": src, "lesion_id": f"L{i // 2}"}))
        y.append(lab)
        groups.append(f"lesion:L{i // 2}")
        sources.append(src)
    for i in range(n_sd):
        samples.append(Sample(f"/sd/{i}.jpg", f"c{i % 6}", {"source": "sd198", "image_id": f"{100000 + i}HB"}))
        y.append(i % 6)
        groups.append(f"sd:{i // 2}")
        sources.append("sd198")
    del rng
    return Tasks(
        samples=samples,
        internal=np.arange(n_int),
        internal_labels=labels,
        sd198=np.arange(n_int, n_int + n_sd),
        sd198_labels=[f"c{k}" for k in range(6)],
        y=np.array(y),
        groups=np.array(groups),
        sources=np.array(sources),
    )


def test_informative_features_beat_noise_on_every_task() -> None:
    t = _tasks()
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(len(t.samples), 16))
    signal = noise.copy()
    signal[np.arange(len(t.samples)), t.y] += 3.0  # class shows in one coordinate
    good_i, bad_i = internal_task(signal, t), internal_task(noise, t)
    assert good_i["probe"]["macro_f1"] > 0.9 > 0.5 > bad_i["probe"]["macro_f1"]
    lo, hi = good_i["probe"]["macro_f1_ci95"]
    assert lo <= good_i["probe"]["macro_f1"] <= hi
    assert good_i["probe"]["mel_auroc"] > 0.95 and good_i["smartphone"]["macro_f1"] > 0.8
    good_s, bad_s = sd198_task(signal, t), sd198_task(noise, t)
    assert good_s["probe"]["balanced_accuracy"] > 0.8 > 0.4 > bad_s["probe"]["balanced_accuracy"]
    row = {"name": "x", "internal": good_i, "sd198": good_s, "embed_seconds": 1.0, "latency_ms": 2.0}
    assert "| x | " in table([row])


def test_colour_constancy_reaches_the_histogram_row_and_its_cache_key(tmp_path: Path) -> None:
    """--colour-constancy: the histogram of two photos of one scene under different casts becomes (nearly)
    the same, and the cache keeps the two variants apart."""
    import cv2
    from encoders import histogram_features

    from dermedge.preprocess import shades_of_gray

    rng = np.random.default_rng(1)
    scene = rng.integers(40, 180, size=(80, 80, 3)).astype(np.float32)
    paths = []
    for i, cast in enumerate([(1.0, 1.0, 1.0), (1.25, 1.0, 0.75)]):  # same brightness, warmer
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(np.clip(scene * cast, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        paths.append(str(p))
    tasks = Tasks(
        samples=[Sample(p, "NEV", {}) for p in paths],
        internal=np.arange(2),
        internal_labels=["NEV"],
        sd198=np.arange(0),
        sd198_labels=[],
    )
    cache = tmp_path / "cache"
    raw = histogram_features(32, tasks, cache).x
    sog = histogram_features(32, tasks, cache, shades_of_gray).x
    assert len(list(cache.glob("*.npz"))) == 2
    assert np.abs(raw[0] - raw[1]).sum() > 0.5
    assert np.abs(sog[0] - sog[1]).sum() < 0.5 * np.abs(raw[0] - raw[1]).sum()


def test_the_embedding_cache_survives_a_run_killed_mid_write(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A truncated cache entry (a session that ended mid-write, before writes were atomic) is recomputed with a
    warning that names it, and rewritten whole; a good entry is read back without recomputing."""
    calls: list[int] = []

    def make() -> np.ndarray:
        calls.append(1)
        return np.arange(12, dtype=np.float32).reshape(3, 4)

    x, _ = _cached(tmp_path, "k", make)
    entry = tmp_path / "k.npz"
    assert entry.is_file() and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["k.npz"]  # no temporary file left behind
    np.testing.assert_array_equal(_cached(tmp_path, "k", make)[0], x)
    assert len(calls) == 1
    entry.write_bytes(entry.read_bytes()[:40])  # what a kill mid-write used to leave
    with caplog.at_level("WARNING", logger="dermedge.yardstick"):
        again, _ = _cached(tmp_path, "k", make)
    np.testing.assert_array_equal(again, x)
    assert len(calls) == 2
    assert "k.npz" in caplog.text and "unreadable" in caplog.text
    np.testing.assert_array_equal(_cached(tmp_path, "k", make)[0], x)
    assert len(calls) == 2


def test_probe_c_is_chosen_on_whole_groups_and_reported() -> None:
    """Photos of one lesion never sit on both sides of a fold: features that only identify the lesion
    (four near-copies per lesion, labels random per lesion) must score at chance, not memorise."""
    rng = np.random.default_rng(0)
    n_groups, copies, dim = 90, 4, 300
    lesion = rng.normal(size=(n_groups, dim))
    x = np.repeat(lesion, copies, axis=0) + 0.01 * rng.normal(size=(n_groups * copies, dim))
    y = np.repeat(rng.integers(0, 3, n_groups), copies)
    groups = np.repeat(np.arange(n_groups), copies)
    c, scores = _choose_c(x, y, groups, 3)
    assert set(scores) == {str(v) for v in C_GRID} and scores[str(c)] == max(scores.values())
    assert max(scores.values()) < 0.6  # a leaking split scores ~1.0 here

    t = _tasks()
    signal = rng.normal(size=(len(t.samples), 16))
    signal[np.arange(len(t.samples)), t.y] += 3.0
    probe = internal_task(signal, t)["probe"]
    assert probe["C"] in C_GRID and probe["C_cv_macro_f1"][str(probe["C"])] > 0.9


def test_per_class_f1_names_the_class_the_features_miss() -> None:
    """Features that single out BCC but cannot tell MEL from NEV: the per-class report must say which classes
    are weak, with the photo counts the probe was fitted and tested on."""
    t = _tasks()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(len(t.samples), 16))
    x[t.y == 0, 0] += 4.0  # BCC shows; MEL and NEV look alike
    res = internal_task(x, t)
    pc = res["per_class"]
    assert set(pc) == {"BCC", "MEL", "NEV"}
    assert pc["BCC"]["f1"] > 0.9 and max(pc["MEL"]["f1"], pc["NEV"]["f1"]) < 0.75
    assert sum(v["n_test"] for v in pc.values()) == res["n_test"]
    assert sum(v["n_fit"] for v in pc.values()) == res["n_train"]
    assert np.isclose(np.mean([v["f1"] for v in pc.values()]), res["probe"]["macro_f1"])
    md = per_class_table([{"name": "enc", "internal": res}], t.internal_labels)
    assert md.splitlines()[0].startswith(f"| encoder | BCC ({pc['BCC']['n_fit']}/{pc['BCC']['n_test']})")
    assert md.splitlines()[2] == f"| enc | {pc['BCC']['f1']:.2f} | {pc['MEL']['f1']:.2f} | {pc['NEV']['f1']:.2f} |"


def test_paired_deltas_are_zero_for_the_same_encoder_and_exclude_zero_for_a_better_one() -> None:
    t = _tasks()
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(len(t.samples), 16))
    weak, strong = noise.copy(), noise.copy()
    weak[np.arange(len(t.samples)), t.y] += 0.7
    strong[np.arange(len(t.samples)), t.y] += 3.0

    def row(name: str, x: np.ndarray) -> dict:
        return {"name": name, "internal": internal_task(x, t), "sd198": sd198_task(x, t)}

    w, s = row("weak", weak), row("strong", strong)
    same = paired_deltas(w, row("weak again", weak), 3, 6)
    assert same["vs"] == "weak"
    for k in ("macro_f1", "mel_auroc", "sd198_balanced_accuracy", "smartphone_macro_f1"):
        assert same[k] == 0 and same[f"{k}_ci95"] == [0.0, 0.0]
    up = paired_deltas(w, s, 3, 6)
    for k in ("macro_f1", "sd198_balanced_accuracy", "smartphone_macro_f1"):
        lo, hi = up[f"{k}_ci95"]
        assert 0 < lo <= up[k] <= hi, k
    down = paired_deltas(s, w, 3, 6)
    assert down["macro_f1"] == -up["macro_f1"] and down["macro_f1_ci95"][1] < 0
    s["delta"] = up
    md = delta_table([w, s])
    assert md.splitlines()[0].startswith("| encoder minus weak |")
    assert md.splitlines()[2].startswith(f"| strong | {up['macro_f1']:+.3f} [")


def test_delta_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    t = _tasks()
    rng = np.random.default_rng(5)
    rows = []
    for name, gain in (("base", 0.5), ("better", 3.0)):
        x = rng.normal(size=(len(t.samples), 16))
        x[np.arange(len(t.samples)), t.y] += gain
        rows.append({"name": name, "internal": internal_task(x, t), "sd198": sd198_task(x, t)})
    rows[1]["delta"] = paired_deltas(rows[0], rows[1], 3, 6)
    out = tmp_path / "d.png"
    assert delta_plot(rows, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    from encoders import _short

    assert _short("ft-x (simclr+finetune convnext_atto 112px, 6 ep) + colour histogram") == "ft-x + colour histogram"


def test_an_embedding_plus_the_histogram_keeps_what_each_knows() -> None:
    """Encoder features that know BCC and colour features that know MEL: the concatenated row knows both."""
    from encoders import Features

    t = _tasks()
    rng = np.random.default_rng(4)
    enc, hist = rng.normal(size=(2, len(t.samples), 8))
    enc[t.y == 0, 0] += 4.0
    hist[t.y == 1, 0] += 4.0
    both = with_histogram(Features("enc", enc, "trained", 2.0, 1.5), Features("colour", hist, "histogram", 1.0, None))
    assert both.name == "enc + colour histogram" and both.x.shape == (len(t.samples), 16)
    assert both.seconds == 3.0 and both.latency_ms == 1.5 and both.meta["plus"] == "colour"
    rows = (("enc", enc), ("hist", hist), ("both", both.x))
    f1 = {name: internal_task(x, t)["probe"]["macro_f1"] for name, x in rows}
    assert f1["both"] > max(f1["enc"], f1["hist"]) + 0.15


def test_a_concatenation_of_two_encoders_sums_their_costs_and_keeps_what_each_knows() -> None:
    """Two encoders that each know one class: the --concat row knows both, and costs both encoders' latency."""
    from encoders import Features, concatenated

    t = _tasks()
    rng = np.random.default_rng(5)
    a, b, h = rng.normal(size=(3, len(t.samples), 8))
    a[t.y == 0, 0] += 4.0
    b[t.y == 2, 0] += 4.0
    parts = [
        Features("a-run (simclr convnext_atto 112px, 3 ep) + pooled stages 2,1", a, "trained", 2.0, 1.5),
        Features("b-run (simclr convnext_femto 112px, 3 ep)", b, "trained", 3.0, 2.0),
        Features("colour histogram 8x8x8 (112px crop)", h, "histogram", 1.0, None),
    ]
    row = concatenated(parts)
    assert row.name == "a-run + pooled stages 2,1 + b-run + colour histogram"
    assert row.x.shape == (len(t.samples), 24) and row.seconds == 6.0 and row.latency_ms == 3.5
    assert row.meta["parts"] == [p.name for p in parts]
    f1 = {n: internal_task(x, t)["probe"]["macro_f1"] for n, x in (("a", a), ("b", b), ("both", row.x))}
    assert f1["both"] > max(f1["a"], f1["b"]) + 0.15


def test_concat_with_one_checkpoint_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--concat needs two encoders; with one, the command stops at once (no data folder is even read)."""
    from encoders import main

    with pytest.raises(SystemExit) as exc:
        main(["--data", str(tmp_path / "absent"), "--checkpoint", "runs/x", "--concat", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "--concat needs two or more --checkpoint runs" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
