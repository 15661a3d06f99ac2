"""Each SSL loss against an independent plain-numpy implementation of its published formula."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dermedge.training.losses import BYOLLoss, DINOLoss, IBOTPatchLoss, MAELoss, NTXentLoss  # noqa: E402
from dermedge.training.losses.mae import patchify  # noqa: E402


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ntxent_numpy(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    z = _normalize(np.concatenate([z1, z2]))
    n = len(z1)
    sim = z @ z.T / t
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(np.exp(sim[i, k]) for k in range(2 * n) if k != i)
        total += -np.log(np.exp(sim[i, pos]) / denom)
    return total / (2 * n)


def test_ntxent_matches_formula() -> None:
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    got = NTXentLoss(0.3)(torch.tensor(z1), torch.tensor(z2)).item()
    assert got == pytest.approx(ntxent_numpy(z1, z2, 0.3), rel=1e-6)


def test_ntxent_hand_worked_case() -> None:
    # two images, both views identical and orthogonal between images: s_pos = 1, s_neg = 0
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + 2 * np.exp(0.0)))
    assert NTXentLoss(t)(z, z.clone()).item() == pytest.approx(expected, rel=1e-6)


def test_byol_matches_formula() -> None:
    rng = np.random.default_rng(1)
    p, z = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    expected = np.mean(2 - 2 * (_normalize(p) * _normalize(z)).sum(-1))
    assert BYOLLoss()(torch.tensor(p), torch.tensor(z)).item() == pytest.approx(expected, rel=1e-6)
    assert BYOLLoss()(torch.tensor(p), torch.tensor(p)).item() == pytest.approx(0.0, abs=1e-6)


def test_dino_matches_formula_and_updates_center() -> None:
    rng = np.random.default_rng(2)
    k = 8
    students = [rng.normal(size=(3, k)) for _ in range(4)]
    teachers = [rng.normal(size=(3, k)) for _ in range(2)]
    center = rng.normal(size=(1, k)) * 0.1
    loss = DINOLoss(k, student_temp=0.1, teacher_temp=0.04, center_momentum=0.9)
    loss.center.copy_(torch.tensor(center))
    got = loss([torch.tensor(s) for s in students], [torch.tensor(t) for t in teachers]).item()
    total, pairs = 0.0, 0
    for ti, t in enumerate(teachers):
        q = np.exp(_log_softmax((t - center) / 0.04))
        for si, s in enumerate(students):
            if si != ti:
                total += np.mean(np.sum(-q * _log_softmax(s / 0.1), -1))
                pairs += 1
    assert got == pytest.approx(total / pairs, rel=1e-6)
    expected_center = 0.9 * center + 0.1 * np.concatenate(teachers).mean(0, keepdims=True)
    np.testing.assert_allclose(loss.center.numpy(), expected_center, rtol=1e-6)


def test_ibot_patch_loss_matches_formula() -> None:
    rng = np.random.default_rng(3)
    b, p, k = 2, 5, 6
    s, t = rng.normal(size=(b, p, k)), rng.normal(size=(b, p, k))
    mask = rng.random((b, p)) < 0.5
    mask[:, 0] = True
    got = IBOTPatchLoss(k)(torch.tensor(s), torch.tensor(t), torch.tensor(mask)).item()
    q = np.exp(_log_softmax(t / 0.04))
    ce = np.sum(-q * _log_softmax(s / 0.1), -1)
    expected = np.mean([(ce[i] * mask[i]).sum() / mask[i].sum() for i in range(b)])
    assert got == pytest.approx(expected, rel=1e-6)


def test_mae_loss_matches_formula() -> None:
    rng = np.random.default_rng(4)
    imgs = rng.normal(size=(2, 3, 8, 8))
    patches = imgs.reshape(2, 3, 2, 4, 2, 4).transpose(0, 2, 4, 3, 5, 1).reshape(2, 4, 48)
    np.testing.assert_allclose(patchify(torch.tensor(imgs), 4).numpy(), patches)
    pred = rng.normal(size=(2, 4, 48))
    mask = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=float)
    norm = (patches - patches.mean(-1, keepdims=True)) / np.sqrt(patches.var(-1, ddof=1, keepdims=True) + 1e-6)
    expected = (((pred - norm) ** 2).mean(-1) * mask).sum() / mask.sum()
    got = MAELoss(4)(torch.tensor(imgs), torch.tensor(pred), torch.tensor(mask)).item()
    assert got == pytest.approx(expected, rel=1e-6)
