"""dermedge.training.methods: each SSL method's forward gives a finite loss that trains the encoder, and the
EMA teachers follow their students."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from dermedge.training.encoders import create_encoder, embed_dim  # noqa: E402
from dermedge.training.methods import METHODS, check_method_kwargs  # noqa: E402


def _views(n: int, size: int, count: int) -> list:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, 3, size, size, generator=g) for _ in range(count)]


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_convnet_methods_give_a_loss_that_reaches_the_encoder(name: str) -> None:
    torch.manual_seed(0)
    enc = create_encoder("resnet18", 32)
    method = METHODS[name](enc, embed_dim(enc, 32))
    loss, logs = method(_views(4, 32, 2))
    assert loss.ndim == 0 and torch.isfinite(loss) and isinstance(logs, dict)
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in method.encoder.parameters())


def test_byol_teacher_moves_towards_the_student_after_a_step() -> None:
    torch.manual_seed(0)
    enc = create_encoder("resnet18", 32)
    method = METHODS["byol"](enc, embed_dim(enc, 32))
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)  # the student moves away from the teacher copy
    before = [p.clone() for p in method.teacher.parameters()]
    method.after_step(0.0)
    moved = [float((p - b).abs().sum()) for p, b in zip(method.teacher.parameters(), before)]
    assert sum(moved) > 0
    student = [*method.encoder.parameters(), *method.projector.parameters()]
    with torch.no_grad():
        for p, b, s in zip(method.teacher.parameters(), before, student):
            assert bool(((s - p).abs() <= (s - b).abs() + 1e-6).all())  # closer to the student, never further


def test_method_kwargs_are_each_methods_keyword_options() -> None:
    check_method_kwargs("dino", {"out_dim": 256})
    with pytest.raises(ValueError, match="unknown"):
        check_method_kwargs("simclr", {"out_dim": 256})
