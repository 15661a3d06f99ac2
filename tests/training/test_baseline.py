"""dermedge.training.baseline: the paper's path (PIL + torchvision + torch eager), the benchmarks' baseline."""

from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image

pytest.importorskip("timm")
pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def run32(synthetic_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dermedge.training.config import load_config
    from dermedge.training.train import train

    cfg = load_config(
        Path("training/configs/smoke.yaml").resolve(),
        ["img_size=32", "limit=16", "batch_size=8", "device=cpu"],
        method="simclr",
        arch="resnet18",
        data=[str(synthetic_folder)],
        out=str(tmp_path_factory.mktemp("run") / "r18"),
    )
    return train(cfg)


def test_paper_path_embeds_a_file_like_the_encoder_on_its_transform(run32: Path) -> None:
    import torch
    from dermedge.training.baseline import PaperPath
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from PIL import Image

    from dermedge.bundle import InputSpec

    spec = InputSpec(size=(32, 32), resize_size=37)
    path = PaperPath.load(run32, spec, threads=1)
    data = encode(skin_image(60, 80, seed=1))
    emb, stages = path.embed_file(data)
    assert emb.shape == (1, 512) and set(stages) == {"decode", "preprocess", "inference"}
    assert all(v >= 0 for v in stages.values())
    import io

    x = path.transform(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    assert tuple(x.shape) == (1, 3, 32, 32)
    net = build_encoder(read_checkpoint(run32)).eval()

    def ref_net(t: torch.Tensor) -> np.ndarray:
        return net(t).numpy()  # type: ignore[no-any-return]

    with torch.no_grad():
        ref = ref_net(x)
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)
    # a bundle whose embedding ends with a colour histogram: the paper path appends the same one
    both, _ = PaperPath.load(run32, spec, threads=1, colour_histogram_bins=4).embed_file(data)
    assert both.shape == (1, 512 + 64)
    np.testing.assert_allclose(both[:, :512], emb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.square(both[:, 512:]).sum(), 1.0, rtol=1e-5)
    # a fine-stages bundle (input twice the network's size): the same two-scale embedding, histogram last
    spec64 = InputSpec(size=(64, 64), resize_size=73)
    two = PaperPath.load(run32, spec64, threads=1, colour_histogram_bins=4, fine_stages=((1, 128),))
    emb2, _ = two.embed_file(data)
    assert emb2.shape == (1, 512 + 128 + 64)
    x64 = two.transform(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    with torch.no_grad():
        np.testing.assert_allclose(emb2[:, :512], ref_net(torch.nn.functional.avg_pool2d(x64, 2)), rtol=1e-4, atol=1e-5)


def test_bench_torch_case_reports_the_paper_path(run32: Path, tiny_bundle: Path) -> None:
    from dermedge.bench import run_torch_case

    row = run_torch_case(str(tiny_bundle), str(run32), threads=1, batch=2, quick=True, jpeg_paths=[])
    assert row["backend"].startswith("torch-eager") and row["selected_because"] == "baseline"
    assert row["backend_info"]["backend"] == "torch"
    assert row["latency_ms"]["p50"] > 0 and row["throughput_img_s"] > 0
    assert row["e2e_ms"]["total"] >= row["e2e_ms"]["inference"] > 0 and row["e2e_ms"]["decode"] > 0
