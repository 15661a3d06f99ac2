"""``dermedge import-checkpoint --format bundle``: a bundle's FP32 ONNX encoder back to a training checkpoint whose
weights equal the ones exported, checked against the ONNX file before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from dermedge.training import from_bundle  # noqa: E402
from dermedge.training.checkpoint import build_encoder, read_checkpoint  # noqa: E402
from dermedge.training.encoders import create_encoder  # noqa: E402
from dermedge.training.from_bundle import RecoveryRefused, import_bundle, map_weights  # noqa: E402
from helpers import random_convnext_run, two_class_photos  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from dermedge.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def convnext_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, bundle): a ConvNeXt-atto at 32 px with every weight random and distinct (its layer-scale ``gamma``s
    start equal, which would hide a wrong match), exported with pooled stages 2, 1 and the colour histogram."""
    root = tmp_path_factory.mktemp("from_bundle")
    run = random_convnext_run(root / "run", 32)
    two_class_photos(root / "photos", 12, 40, 48)  # the export's gate needs a few labelled photos
    bundle = root / "bundle"
    argv = ["export", "--checkpoint", str(run), "--formats", "onnxruntime", "--precision", "fp32"]
    argv += ["--eval-data", str(root / "photos"), "--min-cosine", "0", "--max-f1-drop", "100", "--min-agreement", "0"]
    assert main([*argv, "--colour-histogram", "8", "--pooled-stages", "2,1", "--out", str(bundle)]) == 0
    return run, bundle


def test_recovered_weights_equal_the_exported_ones(convnext_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    run, bundle = convnext_bundle
    out = tmp_path / "recovered"
    assert main(["import-checkpoint", "--format", "bundle", str(bundle), "--out", str(out)]) == 0
    want, got = load_file(str(run / "encoder.safetensors")), load_file(str(out / "encoder.safetensors"))
    assert sorted(got) == sorted(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    side = json.loads((out / "encoder.json").read_text())
    assert (side["arch"], side["img_size"], side["embed_dim"]) == ("convnext_atto", 32, 320)
    assert side["trained_by"] == "dermedge train"  # not "... (simclr, None epochs)": export appends that again
    src = side["imported_from"]
    assert src["format"] == "bundle" and src["pooled_stages"] == [[2, 160], [1, 80]]
    assert src["colour_histogram_bins"] == 8 and src["max_rel_diff"] < 1e-5
    assert len(src["weights_matched_by_graph_order"]) == 12  # the 12 blocks' layer scales, renamed on export
    # a bundle exported from the recovered run records where its weights came from, not "unknown"
    from dermedge.export.provenance import training_provenance

    training, commands = training_provenance({"method": "x"}, out)
    assert commands[-1] == f"dermedge import-checkpoint --format bundle {bundle} --out {out}"
    assert training["imported_from"]["bundle"] == src["bundle"] and training["imported_from"]["command"] == commands[-1]
    # what dermedge finetune / export / the yardstick open
    enc = build_encoder(read_checkpoint(out))
    x = torch.randn(2, 3, 32, 32)
    ref = create_encoder("convnext_atto", 32).eval()
    ref.load_state_dict(want)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref(x))


def test_a_wrong_match_is_refused_and_nothing_is_written(
    convnext_bundle: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two same-sized layer scales swapped (what a wrong graph-order match would do): the outputs disagree with
    the ONNX file, the import is refused with the difference, and no file appears."""
    _, bundle = convnext_bundle
    real = from_bundle.map_weights

    def swapped(shapes, inits, first_use):  # type: ignore[no-untyped-def]
        prefix, mapping = real(shapes, inits, first_use)
        a, b = "stages.0.blocks.0.gamma", "stages.0.blocks.1.gamma"
        mapping[a], mapping[b] = mapping[b], mapping[a]
        return prefix, mapping

    monkeypatch.setattr(from_bundle, "map_weights", swapped)
    with pytest.raises(RecoveryRefused, match="differs from encoder.onnx"):
        import_bundle(bundle, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_bundles_without_fp32_onnx_or_weights_are_refused(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    """The test suite's tiny bundle holds a hand-built ONNX graph with unnamed weights: refused with the reason;
    a folder that is no bundle: refused naming it."""
    assert main(["import-checkpoint", "--format", "bundle", str(tiny_bundle), "--out", str(tmp_path / "a")]) == 1
    assert f"error: {tiny_bundle} (encoder.onnx): unknown timm architecture" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    with pytest.raises(RecoveryRefused, match="nowhere"):
        import_bundle(tmp_path / "nowhere", tmp_path / "b")


def test_map_weights_names_first_then_graph_order() -> None:
    shapes = {"a.w": (2, 3), "b.gamma": (4,), "c.gamma": (4,), "d.w": (5,), "f.w": (1,)}
    inits = {
        "enc.a.w": np.zeros((2, 3), np.float32),
        "enc.d.w": np.zeros(5, np.float32),
        "enc.f.w": np.zeros(1, np.float32),
        "view_1": np.ones((1, 4, 1, 1), np.float32),  # read second
        "view": np.zeros((1, 4, 1, 1), np.float32),  # read first
        "shape": np.array([1, 4], np.int64),
    }
    first_use = {"enc.a.w": 0, "view": 1, "view_1": 2, "enc.d.w": 3, "shape": 4, "enc.f.w": 5}
    prefix, mapping = map_weights(shapes, inits, first_use)
    assert prefix == "enc."
    assert mapping == {"a.w": "enc.a.w", "d.w": "enc.d.w", "f.w": "enc.f.w", "b.gamma": "view", "c.gamma": "view_1"}
    # an encoder exported without wrappers: weights named exactly as the keys (prefix ""), renamed ones still matched
    bare = {n[len("enc.") :] if n.startswith("enc.") else n: a for n, a in inits.items()}
    bare_use = {n[len("enc.") :] if n.startswith("enc.") else n: i for n, i in first_use.items()}
    assert map_weights(shapes, bare, bare_use) == (
        "",
        {"a.w": "a.w", "d.w": "d.w", "f.w": "f.w", "b.gamma": "view", "c.gamma": "view_1"},
    )
    with pytest.raises(RecoveryRefused, match="neither named nor matched"):
        map_weights({**shapes, "e.gamma": (4,)}, inits, first_use)
    with pytest.raises(RecoveryRefused, match="not named"):
        map_weights({"x": (1,), "y": (1,), "z": (1,)}, inits, first_use)


def test_finetune_starts_from_a_recovered_encoder_and_records_it(
    convnext_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    """Stage 2 from a bundle's weights (no original run folder needed) runs, and the fine-tuned run's provenance
    lists the bundle's commands, the recovery, then itself."""
    from dermedge.export.provenance import training_provenance
    from dermedge.training.finetune import FinetuneConfig, finetune
    from test_finetune import _fake_shared_data

    run, bundle = convnext_bundle
    rec = tmp_path / "recovered"
    import_bundle(bundle, rec)
    data = _fake_shared_data(tmp_path / "data")
    out = finetune(
        FinetuneConfig(
            checkpoint=str(rec),
            data=str(data),
            out=str(tmp_path / "ft"),
            epochs=1,
            batch_size=8,
            num_workers=0,
            head_warmup_epochs=0,
        )
    )
    side = json.loads((out / "encoder.json").read_text())
    assert side["pretrained_from"] == str(rec) and side["arch"] == "convnext_atto" and side["img_size"] == 32
    training, commands = training_provenance({"method": side["method"]}, out)
    assert training["stage1_imported_from"]["command"] == commands[-2]
    assert commands[-2].startswith("dermedge import-checkpoint --format bundle") and commands[-1].startswith(
        f"dermedge finetune --checkpoint {rec}"
    )
