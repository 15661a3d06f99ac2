"""Stage 2 fine-tuning on a synthetic data folder laid out like ../shared/data."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image

pytest.importorskip("timm")

from dermedge.training.finetune import FinetuneConfig, finetune, internal_samples  # noqa: E402
from dermedge.training.train import train  # noqa: E402


def _fake_shared_data(root: Path) -> Path:
    """pad_ufes_20 with 6 labels mapped to the common vocabulary; classes differ in brightness and blob size."""
    d = root / "pad_ufes_20"
    (d / "images").mkdir(parents=True)
    rows = []
    for i in range(72):
        label = ["NEV", "MEL", "BCC"][i % 3]
        img = skin_image(48, 48, seed=i).astype(np.float32) * (0.5 + 0.25 * (i % 3))
        name = f"images/PAT_{i}_{i}.jpg"
        (d / name).write_bytes(encode(np.clip(img, 0, 255).astype(np.uint8)))
        rows.append({"path": name, "label": label, "patient_id": f"PAT_{i}", "lesion_id": str(i)})
    with open(d / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id", "lesion_id"])
        w.writeheader()
        w.writerows(rows)
    return root


def _tiny_ssl_run(data: Path, out: Path) -> Path:
    """A 32 px SimCLR/ResNet-18 smoke run on the fake PAD-UFES-20 folder: what finetune starts from."""
    from dermedge.training.config import load_config

    cfg = load_config(
        Path("training/configs/smoke.yaml").resolve(),
        ["limit=0", "img_size=32", "batch_size=16"],
        method="simclr",
        arch="resnet18",
        data=[str(data / "pad_ufes_20")],
        out=str(out),
        device="cpu",
    )
    return train(cfg)


def test_finetune_trains_on_the_training_split_only_and_resumes(tmp_path: Path) -> None:

    data = _fake_shared_data(tmp_path / "data")
    assert {s.label for s in internal_samples(data)} == {"NEV", "MEL", "BCC"}
    ssl = _tiny_ssl_run(data, tmp_path / "ssl")
    cfg = FinetuneConfig(
        checkpoint=str(ssl), data=str(data), out=str(tmp_path / "ft"), epochs=2, batch_size=8, num_workers=0, patience=5
    )
    out = finetune(cfg)
    side = json.loads((out / "encoder.json").read_text())
    assert side["method"] == "simclr+finetune" and side["pretrained_from"] == str(ssl)
    assert side["labels"] == ["BCC", "MEL", "NEV"]
    assert side["n_images"] < 72 * 0.7  # the 60 % training part, never validation or test
    assert len((out / "val_macro_f1.csv").read_text().splitlines()) == 2
    finetune(FinetuneConfig(**{**cfg.__dict__, "epochs": 3}))  # resumes after epoch 2: one more epoch
    assert len((out / "val_macro_f1.csv").read_text().splitlines()) == 3

    # init=random: the same architecture, none of the checkpoint's weights (the first conv is set to a
    # constant in the checkpoint, so any trace of it would show)
    from safetensors.numpy import load_file, save_file

    a = load_file(str(ssl / "encoder.safetensors"))
    first = sorted(k for k in a if a[k].ndim == 4)[0]
    save_file({**a, first: np.full_like(a[first], 0.25)}, str(ssl / "encoder.safetensors"))
    scratch = finetune(FinetuneConfig(**{**cfg.__dict__, "out": str(tmp_path / "scratch"), "init": "random"}))
    side = json.loads((scratch / "encoder.json").read_text())
    assert side["method"] == "supervised" and side["pretrained_from"] is None
    b = load_file(str(scratch / "encoder.safetensors"))
    assert a.keys() == b.keys()
    assert np.abs(b[first] - 0.25).mean() > 0.1


def test_finetune_on_train_plus_val_keeps_the_last_epoch_and_never_sees_test(tmp_path: Path) -> None:
    """--train-on train+val: the validation split joins training (no early stopping; every epoch overwrites
    the kept encoder, so the last one is what remains), the test split stays out, and resuming works."""
    from dermedge.training.eval import make_splits

    data = _fake_shared_data(tmp_path / "data")
    ssl = _tiny_ssl_run(data, tmp_path / "ssl")
    splits = make_splits(internal_samples(data))
    cfg = FinetuneConfig(
        checkpoint=str(ssl), data=str(data), out=str(tmp_path / "ft"), epochs=2, batch_size=8, num_workers=0,
        patience=1, train_on="train+val",
    )  # fmt: skip
    out = finetune(cfg)
    side = json.loads((out / "encoder.json").read_text())
    assert side["n_images"] == len(splits.train) + len(splits.val)
    assert side["train_on"] == "train+val" and side["metrics"]["val_macro_f1"] is None
    assert side["epoch"] == 2  # patience 1 did not stop it: there is nothing to early-stop on
    assert not (out / "val_macro_f1.csv").exists()
    first = (out / "encoder.safetensors").read_bytes()
    finetune(FinetuneConfig(**{**cfg.__dict__, "epochs": 3}))  # resumes after epoch 2 and keeps epoch 3
    assert json.loads((out / "encoder.json").read_text())["epoch"] == 3
    assert (out / "encoder.safetensors").read_bytes() != first
    plain = finetune(FinetuneConfig(**{**cfg.__dict__, "out": str(tmp_path / "tr"), "train_on": "train"}))
    plain_side = json.loads((plain / "encoder.json").read_text())
    assert plain_side["n_images"] == len(splits.train) and plain_side["train_on"] == "train"
    with pytest.raises(ValueError, match="train_on must be one of"):
        FinetuneConfig(**{**cfg.__dict__, "train_on": "all"}).validate()


def test_colour_constancy_is_recorded_by_train_and_inherited_by_finetune(tmp_path: Path) -> None:
    from dermedge.training.config import load_config

    data = _fake_shared_data(tmp_path / "data")
    ssl = train(
        load_config(
            Path("training/configs/smoke.yaml").resolve(),
            ["limit=0", "img_size=32", "batch_size=16", "cache=true", "colour_constancy=shades_of_gray"],
            method="simclr",
            arch="resnet18",
            data=[str(data / "pad_ufes_20")],
            out=str(tmp_path / "ssl"),
            device="cpu",
        )
    )
    assert json.loads((ssl / "encoder.json").read_text())["colour_constancy"] == "shades_of_gray"
    cfg = FinetuneConfig(
        checkpoint=str(ssl),
        data=str(data),
        out=str(tmp_path / "ft"),
        epochs=1,
        batch_size=8,
        num_workers=0,
        head_warmup_epochs=0,
    )
    assert json.loads((finetune(cfg) / "encoder.json").read_text())["colour_constancy"] == "shades_of_gray"
    off = finetune(FinetuneConfig(**{**cfg.__dict__, "out": str(tmp_path / "off"), "colour_constancy": "none"}))
    assert json.loads((off / "encoder.json").read_text())["colour_constancy"] == "none"
    with pytest.raises(ValueError, match="colour_constancy must be"):
        FinetuneConfig(**{**cfg.__dict__, "colour_constancy": "retinex"}).validate()
    with pytest.raises(ValueError, match="colour_constancy must be one of"):
        load_config(None, ["colour_constancy=grey"], data=["x"])


def test_weighted_smoothed_ce_is_a_weighted_mean_of_per_sample_losses() -> None:
    """torch's CrossEntropyLoss(weight=w, label_smoothing=s) weights the smoothing term by every class's
    weight, so with a rare class of large weight a uniform prediction scores far above ln(C) and training
    drifts towards the rare class (our first fine-tune run: loss 3.7, val macro-F1 0.13)."""
    import torch
    from dermedge.training.finetune import class_weights, weighted_smoothed_ce

    y = np.array([0] * 4339 + [1] * 12 + [2] * 800)
    w = class_weights(y, 3, power=1.0)
    assert w[1] > 100 * w[0] and np.mean(w[y]) == pytest.approx(1.0)
    logits = torch.zeros(6, 3)
    target = torch.tensor([0, 0, 0, 0, 2, 1])
    wt = torch.tensor(w, dtype=torch.float32)
    assert float(weighted_smoothed_ce(logits, target, wt, 0.1)) == pytest.approx(np.log(3), rel=1e-5)
    confident = torch.tensor([[5.0, 0, 0]] * 4 + [[0, 0, 5.0], [0, 5.0, 0]])
    assert float(weighted_smoothed_ce(confident, target, wt, 0.1)) < 0.5
    assert float(weighted_smoothed_ce(confident, target, wt, 0.0)) < float(
        weighted_smoothed_ce(confident, target, wt, 0.1)
    )
    with pytest.raises(ValueError, match="class_weight_power"):
        from dermedge.training.finetune import FinetuneConfig

        FinetuneConfig(checkpoint="x", data="y", out="z", class_weight_power=2.0).validate()


def test_weight_ema_averages_parameters_and_copies_buffers() -> None:
    import torch
    from dermedge.training.ema import WeightEMA

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.9)
    start = model[0].weight.detach().clone()
    expected = start.clone()
    for t in range(1, 31):
        with torch.no_grad():
            model[0].weight.add_(1.0)
            model[1].running_mean.fill_(float(t))
        ema.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * model[0].weight.detach()
    assert torch.allclose(ema.module[0].weight, expected, atol=1e-5)
    assert 0 < float((model[0].weight - ema.module[0].weight).detach().mean()) < 30  # lags the live weights
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)  # buffers: copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_finetune_with_ema_saves_the_averaged_weights_and_resumes_them(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    data = _fake_shared_data(tmp_path / "data")
    ssl = _tiny_ssl_run(data, tmp_path / "ssl")
    cfg = FinetuneConfig(
        checkpoint=str(ssl), data=str(data), out=str(tmp_path / "ft"), epochs=1, batch_size=8, num_workers=0,
        patience=5, head_warmup_epochs=0, ema=0.9, lr_encoder=0.01,
    )  # fmt: skip
    out = finetune(cfg)
    state = torch.load(out / "finetune_state.pt", map_location="cpu", weights_only=True)
    saved = load_file(str(out / "encoder.safetensors"))
    key = next(k for k, v in saved.items() if v.dtype.is_floating_point and v.ndim == 4)
    assert state["ema"]["updates"] > 0
    assert torch.equal(saved[key], state["ema"]["module"][f"encoder.{key}"])  # the average is what ships
    assert not torch.equal(saved[key], state["model"][f"encoder.{key}"])  # not the live weights
    finetune(FinetuneConfig(**{**cfg.__dict__, "epochs": 2}))  # resumes with its average
    assert torch.load(out / "finetune_state.pt", weights_only=True)["ema"]["updates"] == 2 * state["ema"]["updates"]
    with pytest.raises(ValueError, match="without --ema"):
        plain = FinetuneConfig(**{**cfg.__dict__, "out": str(tmp_path / "plain"), "ema": 0.0})
        finetune(plain)
        finetune(FinetuneConfig(**{**plain.__dict__, "epochs": 2, "ema": 0.9}))


def test_mixup_pairs_are_seeded_permutations_weighted_towards_the_first_photo() -> None:
    from dermedge.training.finetune import mixup_pair

    assert mixup_pair(8, 0.0, np.random.default_rng(0)) == (1.0, None)
    assert mixup_pair(1, 0.2, np.random.default_rng(0)) == (1.0, None)
    draws = [mixup_pair(8, 0.2, np.random.default_rng([0, e])) for e in range(20)]
    for lam, perm in draws:
        assert 0.5 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(8))
    lam0, perm0 = mixup_pair(8, 0.2, np.random.default_rng([0, 0]))  # the same seed and epoch: the same mix
    assert lam0 == draws[0][0] and perm0.tolist() == draws[0][1].tolist()
    assert len({round(lam, 6) for lam, _ in draws}) > 10


def test_finetune_with_mixup_trains_records_it_and_refuses_nonsense(tmp_path: Path) -> None:
    from dermedge.export.provenance import args_command

    data = _fake_shared_data(tmp_path / "data")
    ssl = _tiny_ssl_run(data, tmp_path / "ssl")
    cfg = FinetuneConfig(
        checkpoint=str(ssl), data=str(data), out=str(tmp_path / "ft"), epochs=2, batch_size=8, num_workers=0,
        mixup=0.4,
    )  # fmt: skip
    out = finetune(cfg)
    side = json.loads((out / "encoder.json").read_text())
    assert side["config"]["mixup"] == 0.4 and side["epoch"] >= 1
    assert "--mixup 0.4" in args_command(out)
    with pytest.raises(ValueError, match="mixup must be in"):
        FinetuneConfig(**{**cfg.__dict__, "mixup": -1.0}).validate()


def test_finetune_refuses_a_gpu_it_cannot_see(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from dermedge.cli import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here: --device cuda is valid")
    args = ["finetune", "--checkpoint", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--device", "cuda"]) == 2
    assert "no CUDA GPU is visible" in caplog.text and not (tmp_path / "o").exists()
    assert main([*args, "--device", "tpu"]) == 2 and "device must be" in caplog.text
