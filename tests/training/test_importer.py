"""The importer on synthetic checkpoints written in the released layouts (the real files are not available)."""

import argparse
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from dermedge.training.importer import ImportRefused, import_checkpoint  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def _vit_teacher_ckpt(path: Path, with_module_prefix: bool = False) -> dict:
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    prefix = "module." if with_module_prefix else ""
    teacher = {f"{prefix}backbone.{k}": v for k, v in vit.state_dict().items()}
    teacher[f"{prefix}backbone.masked_embed"] = torch.zeros(192)
    teacher[f"{prefix}head.mlp.0.weight"] = torch.zeros(16, 192)
    ckpt = {
        "arch": "vit_tiny",
        "epoch": 100,
        "teacher": teacher,
        "student": teacher,
        "config": {"model": {"base_model": "vit_tiny", "teacher": {"patch_size": 16}}},
    }
    torch.save(ckpt, path)
    return vit.state_dict()


@pytest.mark.parametrize("fmt, module_prefix", [("dino", False), ("ibot", True)])
def test_dino_ibot_layout(tmp_path: Path, fmt: str, module_prefix: bool) -> None:
    src = tmp_path / "checkpoint-epoch100.pth"
    ref = _vit_teacher_ckpt(src, module_prefix)
    out = import_checkpoint(src, fmt, tmp_path / "out" / "vit.safetensors")
    sd = load_file(str(out))
    assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["arch"] == "vit_tiny_patch16_224" and side["embed_dim"] == 192 and len(side["source_sha256"]) == 64


def test_simclr_sequential_layout(tmp_path: Path) -> None:
    r50 = timm.create_model("resnet50", pretrained=False, num_classes=0)
    names = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    sd = {}
    for k, v in r50.state_dict().items():
        head, _, rest = k.partition(".")
        sd[f"model.{names[head]}.{rest}"] = v
    sd["projection.0.weight"] = torch.zeros(4, 4)
    torch.save({"state_dict": sd, "epoch": 100}, tmp_path / "simclr.pth")
    out = import_checkpoint(tmp_path / "simclr.pth", "simclr", tmp_path / "r50.safetensors")
    got = load_file(str(out))
    assert all(torch.equal(got[k], v) for k, v in r50.state_dict().items())


def test_byol_layout_and_expected_hash(tmp_path: Path) -> None:
    r50 = timm.create_model("resnet50", pretrained=False, num_classes=0)
    torch.save({"state_dict": {f"net.{k}": v for k, v in r50.state_dict().items()}}, tmp_path / "byol.pth")
    import hashlib

    digest = hashlib.sha256((tmp_path / "byol.pth").read_bytes()).hexdigest()
    exp = tmp_path / "expected.json"
    exp.write_text(json.dumps({"files": [{"path": "byol/checkpoint-epoch100.pth", "lfs_sha256": digest}]}))
    out = import_checkpoint(tmp_path / "byol.pth", "byol", tmp_path / "b.safetensors", expected=exp)
    assert json.loads(out.with_suffix(".json").read_text())["matches_release"] == "byol/checkpoint-epoch100.pth"


def test_pickled_objects_are_refused_without_running_them(tmp_path: Path) -> None:
    src = tmp_path / "old.pth"
    torch.save({"teacher": {}, "args": argparse.Namespace(lr=0.1)}, src)
    with pytest.raises(ImportRefused, match="argparse.Namespace"):
        import_checkpoint(src, "dino", tmp_path / "x.safetensors", arch="vit_tiny")
    assert not (tmp_path / "x.safetensors").exists()


def test_wrong_layout_is_explained(tmp_path: Path) -> None:
    torch.save({"foo": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(ImportRefused, match="no 'teacher' entry"):
        import_checkpoint(tmp_path / "x.pth", "dino", tmp_path / "y.safetensors")


def test_paper_embedding_is_four_cls_tokens_and_exports(tmp_path: Path) -> None:
    from dermedge.export.compile.onnx import export_onnx
    from dermedge.training.checkpoint import build_encoder, read_checkpoint

    src = tmp_path / "c.pth"
    _vit_teacher_ckpt(src)
    out = import_checkpoint(src, "dino", tmp_path / "v.safetensors", paper_embedding=True)
    ck = read_checkpoint(out)
    assert ck.embed_dim == 4 * 192
    enc = build_encoder(ck)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        emb = enc(x)
        vit = enc.vit
        tokens = vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(x))))
        assert emb.shape == (2, 768)
        assert torch.allclose(emb[:, -192:], vit.norm(tokens)[:, 0], atol=1e-5)  # last block's CLS, normed
    assert export_onnx(enc, 224, tmp_path / "v.onnx")["max_rel"] <= 1e-4


def test_cli_out_may_be_a_run_folder(tmp_path: Path) -> None:
    """``--out RUN`` (no .safetensors suffix) writes RUN/encoder.safetensors + RUN/encoder.json, the layout every
    other command reads; a bad file exits 1 with the reason."""
    from dermedge.training.checkpoint import read_checkpoint

    from dermedge.cli import main

    src = tmp_path / "checkpoint.pth"
    _vit_teacher_ckpt(src)
    assert main(["import-checkpoint", str(src), "--format", "dino", "--out", str(tmp_path / "run")]) == 0
    assert read_checkpoint(tmp_path / "run").arch == "vit_tiny_patch16_224"
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert (
        main(["import-checkpoint", str(tmp_path / "junk.pth"), "--format", "dino", "--out", str(tmp_path / "b")]) == 1
    )
