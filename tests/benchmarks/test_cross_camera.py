"""Across cameras (``benchmarks/cross_camera.py``) and the melanoma head comparison (``benchmarks/mel_head.py``):
no photo scored is one a head was fitted on, each direction fits on one camera only, and informative features beat
noise (synthetic features, no images)."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import cross_camera as CC  # noqa: E402
import mel_head as MH  # noqa: E402
from encoders import Tasks  # noqa: E402

from dermedge.datasets import Sample  # noqa: E402

LABELS = ["AK/IEC", "BCC", "MEL", "NEV", "VASC"]  # VASC: dermoscopy only, not a shared class


def _tasks(n: int = 600) -> Tasks:
    samples, y, groups, sources = [], [], [], []
    for i in range(n):
        phone = i % 3 == 0
        lab = i % 4 if phone else i % 5
        src = "pad_ufes_20" if phone else "ham10000"
        samples.append(Sample(f"/x/{i}.jpg", LABELS[lab], {"source": src, "lesion_id": f"L{i // 2}"}))
        y.append(lab)
        groups.append(f"lesion:L{i // 2}")
        sources.append(src)
    return Tasks(
        samples=samples,
        internal=np.arange(n),
        internal_labels=LABELS,
        sd198=np.arange(n, n),
        sd198_labels=[],
        y=np.array(y),
        groups=np.array(groups),
        sources=np.array(sources),
    )


def _features(t: Tasks, signal: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(t.y), 16))
    x[np.arange(len(t.y)), t.y] += signal  # the class shows in its own dimension, on both cameras alike
    x[:, 10] += 3.0 * (t.sources == "pad_ufes_20")  # a camera offset the heads must look past
    return x


def test_each_direction_fits_on_one_camera_and_scores_unseen_photos_of_the_other() -> None:
    t = _tasks()
    rows = CC._rows(t)
    assert set(rows) == set(CC.DIRECTIONS)
    for direction, (fit, test) in rows.items():
        phone_fit, phone_test = CC.DIRECTIONS[direction]
        assert len(fit) and len(test) and not set(fit) & set(test)
        assert set(t.sources[fit]) == {"pad_ufes_20" if phone_fit else "ham10000"}
        assert set(t.sources[test]) == {"pad_ufes_20" if phone_test else "ham10000"}
        assert not {t.groups[i] for i in fit} & {t.groups[i] for i in test}  # whole lesions on one side
        assert "VASC" not in {LABELS[v] for v in t.y[np.r_[fit, test]]}  # only the shared classes


def test_informative_features_transfer_and_noise_does_not() -> None:
    t = _tasks()
    fit, test = CC._rows(t)["smartphone -> dermoscopy"]
    good = CC.score(_features(t, 3.0), t, fit, test)
    noise = CC.score(_features(t, 0.0), t, fit, test)
    assert good["n_classes"] == 4 and good["macro_f1"] > 0.8 and noise["macro_f1"] < 0.45
    assert good["mel_auroc"] > 0.9 and 0.3 < noise["mel_auroc"] < 0.7
    lo, hi = CC._paired(noise, good)
    assert lo > 0.2  # the paired interval separates them


def test_melanoma_heads_rank_informative_features_above_noise() -> None:
    t = _tasks()
    good, noise = MH.compare(_features(t, 3.0), t), MH.compare(_features(t, 0.0), t)
    assert good["binary"]["mel_auroc"] > 0.9 and good["eight_class"]["mel_auroc"] > 0.9
    assert 0.3 < noise["binary"]["mel_auroc"] < 0.7
    cv = good["binary"]["cv_auroc"]
    assert cv[str(good["binary"]["C"])] == max(cv.values())  # C chosen by out-of-fold AUROC, not the test photos
    assert len(good["binary_minus_eight_class_ci95"]) == 2


def test_parts_of_the_built_in_embedding_follow_its_manifest() -> None:
    from dermedge.bundle import open_bundle

    bundle = str(Path(__file__).resolve().parents[2] / "dermedge" / "models" / "default")
    with open_bundle(bundle) as b:
        enc = b.manifest.encoder
    x = np.arange(3 * enc.embed_dim, dtype=float).reshape(3, enc.embed_dim)
    parts = CC.part_features(bundle, x)
    no_hist, final = parts[f"{bundle} without colour histogram"], parts[f"{bundle} final features only"]
    assert enc.colour_histogram_dim == 512 and no_hist.shape == (3, enc.embed_dim - 512)
    assert final.shape == (3, enc.final_dim) and np.array_equal(final, x[:, : enc.final_dim])
    assert np.array_equal(no_hist, x[:, : enc.embed_dim - 512])  # the histogram is the embedding's tail


def test_checkpoints_and_bundles_keep_their_order_and_get_the_yardstick_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _tasks(30)
    seen: list[tuple[str, tuple[int, ...]]] = []

    class F:
        def __init__(self, x: np.ndarray) -> None:
            self.x = x

    def ckpt(run: str, tasks: Tasks, cache: Path, stages: tuple[int, ...] = ()) -> tuple[F, None]:
        seen.append((run, stages))
        return F(np.full((len(tasks.y), 4 + len(stages)), 1.0)), None

    monkeypatch.setattr(CC.Y, "checkpoint_features", ckpt)
    monkeypatch.setattr(CC.Y, "bundle_features", lambda b, tasks, cache: F(np.zeros((len(tasks.y), 3))))
    hist = np.full((len(t.y), 2), 7.0)
    out = CC.encoder_features(
        [("checkpoint", "runs/a"), ("bundle", "b"), ("checkpoint", "runs/c")], t, Path("."), (2, 1), hist
    )
    assert list(out) == [
        "runs/a + pooled stages 2,1",
        "runs/a + pooled stages 2,1 + colour",
        "b",
        "runs/c + pooled stages 2,1",
        "runs/c + pooled stages 2,1 + colour",
    ]
    assert seen == [("runs/a", (2, 1)), ("runs/c", (2, 1))]
    assert out["runs/a + pooled stages 2,1 + colour"].shape == (len(t.y), 8)
    np.testing.assert_array_equal(out["runs/a + pooled stages 2,1 + colour"][:, -2:], hist)
    assert "runs/a + colour" not in CC.encoder_features([("checkpoint", "runs/a")], t, Path("."), (), None)


def test_parts_needs_a_bundle_first_and_some_encoder_is_required(tmp_path: Path) -> None:
    for argv in (["--checkpoint", "runs/a", "--parts"], []):
        with pytest.raises(SystemExit) as e:
            CC.main([*argv, "--out", str(tmp_path / "x")])
        assert e.value.code == 2
