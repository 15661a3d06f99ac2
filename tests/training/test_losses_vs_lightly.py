"""Our SSL losses against lightly's (the field's library) as golden values, on the same random inputs.

Decision (issue 13): dermedge keeps its own small loss modules (each a few lines, DDP-aware through
``dermedge.training.distributed``, checked against the papers' formulas in ``test_losses.py``) instead of
depending on lightly at run time: lightly pulls pytorch-lightning and hydra, and its loss signatures changed
between releases. lightly is a dev dependency (``pip install --no-deps lightly==1.6.0``) used only here.
Known, deliberate difference: iBOT's patch centre. The paper's code updates it with every teacher patch
token; lightly 1.6 updates it with the masked tokens only. The first loss value agrees; the centre does not.
"""

import pytest

torch = pytest.importorskip("torch")
lightly_loss = pytest.importorskip(
    "lightly.loss", reason="lightly (dev dependency) not installed: pip install --no-deps lightly==1.6.0"
)

from dermedge.training.losses import BYOLLoss, DINOLoss, IBOTPatchLoss, MAELoss, NTXentLoss  # noqa: E402
from dermedge.training.losses.mae import patchify  # noqa: E402


def _g(*shape: int, seed: int = 0) -> "torch.Tensor":
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temperature", [0.1, 0.2, 0.5])
def test_ntxent_equals_lightly(temperature: float) -> None:
    z1, z2 = _g(16, 32, seed=1), _g(16, 32, seed=2)
    ours = NTXentLoss(temperature)(z1, z2)
    theirs = lightly_loss.NTXentLoss(temperature=temperature)(z1, z2)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_byol_equals_two_plus_twice_lightlys_negative_cosine() -> None:
    p, z = _g(16, 64, seed=3), _g(16, 64, seed=4)
    theirs = lightly_loss.NegativeCosineSimilarity()(p, z)
    torch.testing.assert_close(BYOLLoss()(p, z), 2 + 2 * theirs, rtol=1e-5, atol=1e-6)


def test_dino_equals_lightly_including_the_centre_over_steps() -> None:
    k = 48
    ours = DINOLoss(k, student_temp=0.1, teacher_temp=0.04, center_momentum=0.9)
    theirs = lightly_loss.DINOLoss(
        output_dim=k, warmup_teacher_temp=0.04, teacher_temp=0.04, student_temp=0.1, center_momentum=0.9
    )
    for step in range(3):  # the centre after each step feeds the next loss
        teacher = [_g(8, k, seed=10 * step + i) for i in range(2)]  # two global views
        student = [_g(8, k, seed=10 * step + 5 + i) for i in range(4)]  # + two local views
        torch.testing.assert_close(ours(student, teacher), theirs(teacher, student), rtol=1e-5, atol=1e-6)


def test_ibot_patch_loss_equals_lightly_on_the_first_step() -> None:
    b, h, w, k = 4, 3, 3, 32
    mask = _g(b, h, w, seed=20) > 0
    mask[:, 0, 0] = True  # every image has a masked patch
    teacher, student = _g(b, h * w, k, seed=21), _g(b, h * w, k, seed=22)
    ours = IBOTPatchLoss(k, student_temp=0.1, teacher_temp=0.04)(student, teacher, mask.flatten(1))
    flat = mask.flatten()
    theirs = lightly_loss.IBOTPatchLoss(output_dim=k, teacher_temp=0.04, student_temp=0.1)(
        teacher.flatten(0, 1)[flat], student.flatten(0, 1)[flat], mask
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_mae_patchify_and_loss_equal_lightlys_utilities() -> None:
    from lightly.models.utils import patchify as lightly_patchify

    images = _g(2, 3, 32, 32, seed=30)
    torch.testing.assert_close(patchify(images, 16), lightly_patchify(images, 16))
    pred = _g(2, 4, 16 * 16 * 3, seed=31)
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]])
    target = lightly_patchify(images, 16)
    masked = mask.bool()
    expected = torch.nn.functional.mse_loss(pred[masked], target[masked])  # lightly's MAE recipe (no norm_pix)
    torch.testing.assert_close(MAELoss(16, norm_pix=False)(images, pred, mask), expected, rtol=1e-5, atol=1e-6)
