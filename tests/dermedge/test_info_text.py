"""dermedge.info_text: `dermedge info` shows the figures a user needs to judge the model, beside its baselines."""

from helpers import write_tiny_bundle

import dermedge
from dermedge.info_text import format_info


def test_info_text_of_the_built_in_model_shows_quality_beside_baselines() -> None:
    with dermedge.load_model() as model:
        info = model.info()
    text = format_info({**info, "installed_backends": ["onnxruntime"]})
    metrics = info["provenance"]["metrics"]
    assert f"macro-F1 {metrics['test']['macro_f1']:.3f}" in text
    for name in metrics.get("baselines", {}):
        assert name in text
    if metrics.get("sd198_probe"):
        assert f"vs colour histogram {metrics['sd198_probe']['colour_histogram']:.3f}" in text
    assert "installed: onnxruntime" in text and "MODEL_CARD.md" in text


def test_info_text_without_head_or_metrics(tmp_path) -> None:
    with dermedge.load_model(write_tiny_bundle(tmp_path / "b", with_head=False)) as model:
        text = format_info(model.info())
    assert "head      none" in text and "test set" not in text and "baselines" not in text
