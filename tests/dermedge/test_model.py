import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image, write_tiny_bundle

import dermedge
from dermedge.errors import BatchInputError, DermedgeError, InputError


@pytest.fixture(scope="module")
def model(tiny_bundle: Path):
    with dermedge.load_model(tiny_bundle, backend="onnxruntime", threads=1) as m:
        yield m


def test_embed_accepts_paths_bytes_arrays(model, tmp_path: Path) -> None:
    img = skin_image()
    p = tmp_path / "a.jpg"
    p.write_bytes(encode(img))
    e_path = model.embed(str(p))
    e_bytes = model.embed(p.read_bytes())
    e_batch = model.embed([p, p.read_bytes(), img])
    assert e_path.shape == (1, 16) and e_batch.shape == (3, 16)
    np.testing.assert_allclose(e_path[0], e_bytes[0], atol=1e-6)
    np.testing.assert_allclose(e_batch[0], e_path[0], atol=1e-6)
    assert model.embed(np.stack([img, img])).shape == (2, 16)  # (N, H, W, 3) is N images
    assert model.embed([]).shape == (0, 16)


def test_classify_returns_predictions(model) -> None:
    preds = model.classify([skin_image(seed=1), skin_image(seed=2)], top_k=2)
    assert len(preds) == 2
    p = preds[0]
    assert p.label in model.labels and set(p.scores) == set(model.labels)
    assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(p.top_k) == 2 and p.top_k[0] == (p.label, p.score) and p.top_k[0][1] >= p.top_k[1][1]


def test_bad_inputs_raise_after_trying_all(model, tmp_path: Path) -> None:
    good = skin_image()
    with pytest.raises(BatchInputError) as exc:
        model.embed([good, b"garbage", tmp_path / "missing.jpg", good])
    assert len(exc.value.failures) == 2
    assert "<bytes #1>" in str(exc.value) and "missing.jpg" in str(exc.value)
    with pytest.raises(InputError, match="no such file"):
        model.classify(tmp_path / "missing.jpg")


def test_iter_results_keeps_going_past_bad_inputs(model) -> None:
    items = [skin_image(), b"%PDF-1.7", skin_image(seed=3)] * 7
    results = list(model.iter_results(items, classify=True, batch_size=4))
    assert [r.index for r in results] == list(range(21))
    assert [r.ok for r in results] == [True, False, True] * 7
    assert all(r.prediction is not None for r in results if r.ok)
    assert "PDF" in results[1].error.reason


def test_threads_give_identical_results(model) -> None:
    images = [skin_image(seed=i) for i in range(8)]
    expected = model.embed(images)
    errors: list[str] = []

    def worker(k: int) -> None:
        for j in range(10):
            i = (k + j) % 8
            if not np.allclose(model.embed(images[i])[0], expected[i], atol=1e-5):
                errors.append(f"thread {k} image {i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_fit_head_and_save_round_trip(model, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # two visually different classes: dark vs light images
    images = [
        np.full((40, 40, 3), v, np.uint8) + rng.integers(0, 20, (40, 40, 3), dtype=np.uint8)
        for v in [20] * 12 + [200] * 12
    ]
    labels = ["dark"] * 12 + ["light"] * 12
    fitted = model.fit_head(images, labels, folds=3)
    assert fitted.labels == ("dark", "light")
    assert fitted.head.metrics["cv"]["accuracy"] > 0.9
    out = fitted.save(tmp_path / "mine.dermedge", name="mine")
    with dermedge.load_model(out, backend="onnxruntime") as again:
        assert again.manifest.name == "mine" and again.labels == ("dark", "light")
        assert again.classify(images[0])[0].label == "dark"
        assert again.manifest.provenance["head_fitted"]["n_samples"] == 24
        assert again.classify(images[0])[0].ood_score is not None  # fit_head also fits the abstain detector
    with pytest.raises(dermedge.BundleError, match="exists"):
        fitted.save(out)


def test_embedding_only_bundle(tmp_path: Path) -> None:
    b = write_tiny_bundle(tmp_path / "nohead", with_head=False)
    with dermedge.load_model(b, backend="onnxruntime") as m:
        assert m.embed(skin_image()).shape == (1, 16)
        with pytest.raises(DermedgeError, match="no classification head"):
            m.classify(skin_image())


def test_info_and_repr(model) -> None:
    info = model.info()
    assert info["name"] == "tiny" and info["backend"]["backend"] == "onnxruntime"
    assert info["encoder"]["embed_dim"] == 16 and "tiny" in repr(model)


def test_precision_not_in_bundle(tiny_bundle: Path) -> None:
    with pytest.raises(dermedge.BundleError, match="no artifact for onnxruntime/int8"):
        dermedge.load_model(tiny_bundle, backend="onnxruntime", precision="int8")


@pytest.mark.parametrize("backend", dermedge.available_backends())
def test_eight_threads_times_200_classify_match_sequential(tiny_bundle: Path, backend: str) -> None:
    images = [skin_image(40, 40, seed=i) for i in range(16)]
    with dermedge.load_model(tiny_bundle, backend=backend, threads=1) as m:
        expected = [m.classify(img)[0].scores for img in images]
        mismatches: list[tuple[int, int]] = []

        def worker(k: int) -> None:
            for j in range(200):
                i = (k * 7 + j) % 16
                got = m.classify(images[i])[0].scores
                if any(abs(got[lab] - expected[i][lab]) > 1e-6 for lab in got):
                    mismatches.append((k, j))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not mismatches


def test_fit_head_model_outlives_its_parent(tiny_bundle: Path, tmp_path: Path) -> None:
    """The derived model shares the encoder by reference count: closing the parent first breaks nothing."""
    import shutil

    zipped = Path(shutil.make_archive(str(tmp_path / "tiny"), "zip", tiny_bundle)).rename(tmp_path / "tiny.dermedge")
    rng = np.random.default_rng(0)
    images = [skin_image(40, 50, seed=i) for i in range(24)]
    labels = ["a" if i % 2 else "b" for i in range(24)]
    parent = dermedge.load_model(zipped, backend="onnxruntime")
    extracted = parent._bundle.root
    child = parent.fit_head(images, labels, folds=3)
    parent.close()
    parent.close()  # twice is harmless
    assert extracted.exists()  # the child still holds the zip's extracted files
    assert child.classify(images[:2])[0].label in ("a", "b")
    child.save(tmp_path / "mine")  # reads the encoder files from the shared extraction
    with pytest.raises(DermedgeError, match="closed"):
        parent.fit_head(rng.normal(size=(24, 16)).astype(np.float32), labels, folds=3)
    child.close()
    assert not extracted.exists()  # released when the last holder closed


def test_embed_tensor_runs_the_encoder_on_prepared_input(tiny_bundle) -> None:
    from dermedge.errors import InputError
    from dermedge.preprocess import prepare

    img = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    with dermedge.load_model(tiny_bundle) as model:
        x = prepare(img, model.manifest.input)[None]
        np.testing.assert_allclose(model.embed_tensor(x), model.embed([img]), rtol=1e-5, atol=1e-6)
        with pytest.raises(InputError, match=r"expected \(N, 3, 32, 32\) float32"):
            model.embed_tensor(x[:, :, :16])
        with pytest.raises(InputError, match="float32"):
            model.embed_tensor(x.astype(np.float64))
