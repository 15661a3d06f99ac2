import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")

from dermedge.training.cli import build_train_parser, config_from_args  # noqa: E402
from dermedge.training.config import load_config  # noqa: E402
from dermedge.training.train import train  # noqa: E402

CASES = [
    ("simclr", "resnet18"),
    ("byol", "resnet18"),
    ("dino", "vit_tiny_patch16_224"),
    ("ibot", "vit_tiny_patch16_224"),
    ("mae", "vit_tiny_patch16_224"),
]


def _cfg(method: str, arch: str, data: Path, out: Path, epochs: int = 1):
    args = build_train_parser().parse_args(
        [
            "--config",
            str(Path("training/configs/smoke.yaml").resolve()),
            "--method",
            method,
            "--arch",
            arch,
            "--data",
            str(data),
            "--img-size",
            "32",
            "--epochs",
            str(epochs),
            "--limit",
            "16",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    return config_from_args(args)


@pytest.mark.parametrize("method, arch", CASES)
def test_each_method_trains_and_checkpoints(method: str, arch: str, synthetic_folder: Path, tmp_path: Path) -> None:
    out = train(_cfg(method, arch, synthetic_folder, tmp_path / method))
    side = json.loads((out / "encoder.json").read_text())
    assert side["arch"] == arch and side["method"] == method and side["epoch"] == 1
    assert (out / "encoder.safetensors").stat().st_size > 1000 and (out / "config.yaml").is_file()
    assert "loss" in (out / "metrics.csv").read_text()


def test_a_batch_larger_than_the_data_is_refused_not_shrunk(synthetic_folder: Path, tmp_path: Path) -> None:
    """The learning rate scales with the configured batch, so a silently smaller batch would train at the wrong lr."""
    cfg = _cfg("simclr", "resnet18", synthetic_folder, tmp_path / "big")
    cfg.batch_size = 64
    with pytest.raises(ValueError, match="batch_size 64 needs at least 64 images.*found 16"):
        train(cfg)


def test_resume_continues_the_schedule(synthetic_folder: Path, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "run"
    train(_cfg("simclr", "resnet18", synthetic_folder, out, epochs=1))
    state1 = torch.load(out / "state.pt", weights_only=True)
    train(_cfg("simclr", "resnet18", synthetic_folder, out, epochs=2))
    state2 = torch.load(out / "state.pt", weights_only=True)
    assert state1["epoch"] == 1 and state2["epoch"] == 2 and state2["step"] == 2 * state1["step"]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]


def test_epochs_in_budget_counts_what_fits_after_the_first_epoch() -> None:
    from dermedge.training.train import epochs_in_budget

    # 10 min budget, 60 s spent (set-up + epoch 1), 50 s an epoch (x1.05): 10 more fit, 11 in all
    assert epochs_in_budget(10, 100, 60, 50) == 11
    assert epochs_in_budget(10, 5, 60, 50) == 5  # the configured epochs stay the ceiling
    assert epochs_in_budget(1, 100, 90, 50) == 1  # over budget already: the epoch done is the run
    assert epochs_in_budget(10, 100, 60, 0) == 100


def test_a_time_budget_ends_the_run_and_a_resume_keeps_its_length(synthetic_folder: Path, tmp_path: Path) -> None:
    import dataclasses

    import torch
    import yaml

    out = tmp_path / "run"
    cfg = dataclasses.replace(_cfg("simclr", "resnet18", synthetic_folder, out, epochs=5), time_budget_min=1e-4)
    train(cfg)
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["epoch"] == 1  # 6 ms cannot hold a second epoch
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 1
    assert "time budget" in (out / "train.log").read_text()
    train(config_from_args(build_train_parser().parse_args(["--out", str(out)])))  # resumed: nothing left to do
    assert torch.load(out / "state.pt", weights_only=True)["step"] == state["step"]
    with pytest.raises(ValueError, match="time_budget_min"):
        dataclasses.replace(cfg, time_budget_min=-1.0).validate()
    # a generous budget leaves the configured epochs alone
    roomy = dataclasses.replace(cfg, out=str(tmp_path / "roomy"), epochs=2, time_budget_min=60.0)
    train(roomy)
    assert torch.load(tmp_path / "roomy" / "state.pt", weights_only=True)["epoch"] == 2


def test_init_from_starts_from_weights_with_a_fresh_schedule(synthetic_folder: Path, tmp_path: Path) -> None:
    import dataclasses

    import torch

    first = tmp_path / "first"
    train(_cfg("simclr", "resnet18", synthetic_folder, first, epochs=1))
    before = torch.load(first / "state.pt", weights_only=True)
    second = tmp_path / "second"
    cfg = dataclasses.replace(
        _cfg("simclr", "resnet18", synthetic_folder, second, epochs=1), init_from=str(first), lr=0.0
    )
    cfg.warmup_epochs = 0
    cfg.min_lr = 0.0
    train(cfg)
    after = torch.load(second / "state.pt", weights_only=True)
    assert after["epoch"] == 1 and after["step"] == before["step"]  # counters start afresh
    key = next(k for k in before["model"] if k.startswith("encoder.") and k.endswith("weight"))
    assert torch.equal(before["model"][key], after["model"][key])  # lr 0: the weights are the first run's
    # a different method or architecture is refused by name
    bad = dataclasses.replace(cfg, out=str(tmp_path / "third"), method="byol")
    with pytest.raises(ValueError, match="method='simclr'"):
        train(bad)
    with pytest.raises(ValueError, match="has no state.pt"):
        dataclasses.replace(cfg, init_from=str(tmp_path)).validate()


def test_config_layers_and_validation(tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text("epochs: 7\nlr: 0.5\n")
    cfg = load_config(exp, ["lr=0.25", "method_kwargs={temperature: 0.1}"], data=["x"], out="o")
    assert (cfg.epochs, cfg.lr, cfg.method_kwargs) == (7, 0.25, {"temperature": 0.1})
    with pytest.raises(ValueError, match="unknown config keys: bogus"):
        load_config(None, ["bogus=1"], data=["x"])
    with pytest.raises(ValueError, match="needs a ViT"):
        load_config(None, ["method=mae", "arch=resnet18"], data=["x"])


def test_cli_train_smoke_real_data(shared_data: Path, tmp_path: Path) -> None:
    """The acceptance command on ../shared/data/pad_ufes_20 (64 images, 64 px, 1 epoch)."""
    out = tmp_path / "RUN"
    cmd = [
        sys.executable,
        "-m",
        "dermedge.cli",
        "train",
        "--method",
        "dino",
        "--arch",
        "vit_tiny_patch16_224",
        "--data",
        str(shared_data / "pad_ufes_20"),
        "--img-size",
        "64",
        "--epochs",
        "1",
        "--limit",
        "64",
        "--batch-size",
        "16",
        "--num-workers",
        "0",
        "--out",
        str(out),
        "local_crops=2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "encoder.safetensors").is_file()


def _with_broken(src: Path, dst: Path, n_broken: int) -> Path:
    import shutil

    shutil.copytree(src, dst)
    for i in range(n_broken):
        (dst / "light" / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return dst


def test_unreadable_images_are_counted_per_epoch_not_replaced(synthetic_folder: Path, tmp_path: Path) -> None:
    """The failures come back from a DataLoader worker process (a list kept on the dataset never did)."""
    import csv

    data = _with_broken(synthetic_folder, tmp_path / "data", 1)
    cfg = load_config(
        Path("training/configs/smoke.yaml").resolve(),
        ["num_workers=1", "limit=0", "img_size=32", "batch_size=5", "max_unreadable_fraction=0.1"],
        method="simclr",
        arch="resnet18",
        data=[str(data)],
        out=str(tmp_path / "run"),
        device="cpu",
    )
    out = train(cfg)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows[0]["unreadable"] == "1"
    assert "broken0.jpg" in (out / "unreadable.txt").read_text()


def test_too_many_unreadable_images_abort_with_the_list(synthetic_folder: Path, tmp_path: Path) -> None:
    data = _with_broken(synthetic_folder, tmp_path / "data", 3)
    cfg = load_config(
        Path("training/configs/smoke.yaml").resolve(),
        ["limit=0", "img_size=32", "batch_size=9", "max_unreadable_fraction=0.05"],
        method="simclr",
        arch="resnet18",
        data=[str(data)],
        out=str(tmp_path / "run"),
        device="cpu",
    )
    with pytest.raises(RuntimeError, match="3 of 27 training images are unreadable") as exc:
        train(cfg)
    assert all(f"broken{i}.jpg" in str(exc.value) for i in range(3))


def test_each_run_folder_gets_only_its_own_log(tmp_path: Path) -> None:
    import logging

    from dermedge.training.train import log_to_run_folder

    log = logging.getLogger("dermedge.test-run-log")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    log_to_run_folder(log, tmp_path / "a" / "x.log")
    log.info("first run")
    log_to_run_folder(log, tmp_path / "b" / "x.log")
    log_to_run_folder(log, tmp_path / "b" / "x.log")  # resuming in the same process: no second handler
    log.info("second run")
    for h in log.handlers:
        h.flush()
    a, b = (tmp_path / "a" / "x.log").read_text(), (tmp_path / "b" / "x.log").read_text()
    assert "first run" in a and "second run" not in a
    assert b.count("second run") == 1 and "first run" not in b
