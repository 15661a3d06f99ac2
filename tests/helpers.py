"""Test helpers: a tiny ONNX encoder, bundles built from it, synthetic images."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_tiny_onnx(path: Path, embed_dim: int = 16, size: int = 32, seed: int = 0) -> Path:
    """Conv(3->8, 3x3, stride 2) -> ReLU -> GlobalAveragePool -> Flatten -> Gemm(8->embed_dim), dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w_conv = numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w_conv")
    b_conv = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b_conv")
    w_fc = numpy_helper.from_array(rng.normal(0, 0.5, (8, embed_dim)).astype(np.float32), "w_fc")
    b_fc = numpy_helper.from_array(rng.normal(0, 0.1, (embed_dim,)).astype(np.float32), "b_fc")
    nodes = [
        helper.make_node("Conv", ["image", "w_conv", "b_conv"], ["c"], "stem", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], "relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], "pool"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten", axis=1),
        helper.make_node("Gemm", ["f", "w_fc", "b_fc"], ["embedding"], "fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", embed_dim])],
        initializer=[w_conv, b_conv, w_fc, b_fc],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_tiny_bundle(
    out: Path,
    *,
    with_head: bool = True,
    size: int = 32,
    embed_dim: int = 16,
    backends: tuple[str, ...] = ("onnxruntime", "openvino"),
    input_spec: object | None = None,
    abstain: bool = False,
    abstain_dims: int | None = None,
) -> Path:
    from dermedge.bundle import EncoderInfo, InputSpec
    from dermedge.bundle_writer import ArtifactSource, write_bundle
    from dermedge.heads import LinearHead

    src = out.parent / f"{out.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    onnx_path = make_tiny_onnx(src / "encoder.onnx", embed_dim, size)
    head = None
    if with_head:
        rng = np.random.default_rng(1)
        head = LinearHead(
            rng.normal(size=(embed_dim, 3)).astype(np.float32),
            np.zeros(3, np.float32),
            ("MEL", "NEV", "BCC"),
            temperature=1.5,
            ood_mean=rng.normal(size=abstain_dims or embed_dim).astype(np.float32) if abstain else None,
            ood_precision=(np.eye(abstain_dims or embed_dim) * 0.5).astype(np.float32) if abstain else None,
            ood_threshold=2.0 if abstain else None,
        )
    return write_bundle(
        out,
        name="tiny",
        version="0.0.1",
        encoder=EncoderInfo(
            arch="tiny-conv",
            embed_dim=embed_dim,
            params=8 * 27 + 8 + 8 * embed_dim + embed_dim,
            trained_by="random weights (test fixture)",
        ),
        input_spec=input_spec or InputSpec(size=(size, size), resize_size=size + size // 7),
        artifacts=[ArtifactSource(b, "fp32", "onnx", onnx_path, dest="encoder.onnx") for b in backends],
        head=head,
        provenance={"data": ["none: random weights for tests"]},
        description="test fixture",
    )


def encode(image_rgb: np.ndarray, ext: str = ".jpg", params: list[int] | None = None) -> bytes:
    import cv2

    ok, buf = cv2.imencode(
        ext, image_rgb[:, :, ::-1] if image_rgb.ndim == 3 and image_rgb.shape[2] == 3 else image_rgb, params or []
    )
    assert ok
    return buf.tobytes()


def skin_image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A synthetic skin-coloured RGB image with a dark blob (no real data needed)."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (200, 150, 120)
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - h / 2) ** 2 / (h / 4) ** 2 + (xx - w / 2) ** 2 / (w / 5) ** 2) < 1
    img[blob] = (90, 60, 50)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_convnext_run(run: Path, img_size: int = 32, seed: int = 0) -> Path:
    """A ConvNeXt-atto training run (``encoder.safetensors`` + sidecar) whose weights are all random and distinct:
    its layer scales start equal, which would hide a wrong weight match. Needs torch, timm and safetensors."""
    import torch
    from dermedge.training.checkpoint import write_sidecar
    from dermedge.training.encoders import create_encoder
    from safetensors.torch import save_file

    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = create_encoder("convnext_atto", img_size)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "encoder.safetensors"))
    write_sidecar(run, {"arch": "convnext_atto", "img_size": img_size, "embed_dim": 320, "method": "simclr"})
    return run


def two_class_photos(root: Path, n: int = 12, h: int = 40, w: int = 48) -> Path:
    """``n`` synthetic skin JPEGs in class folders ``a`` and ``b`` (enough for an export gate)."""
    for i in range(n):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        (root / "ab"[i % 2] / f"{i}.jpg").write_bytes(encode(skin_image(h, w, seed=i)))
    return root
