import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")
ROOT = Path(__file__).resolve().parents[2]


def _torchrun(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_gradients_are_synchronised_across_ranks() -> None:
    proc = _torchrun([str(ROOT / "tests" / "training" / "ddp_worker.py")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT local_grads_differ=True synced_grads_equal=True world=2" in proc.stdout


def test_torchrun_training_writes_one_checkpoint(synthetic_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = _torchrun(
        [
            "-m",
            "dermedge.training.train",
            "--config",
            str(ROOT / "training/configs/smoke.yaml"),
            "--method",
            "simclr",
            "--arch",
            "resnet18",
            "--data",
            str(synthetic_folder),
            "--img-size",
            "32",
            "--limit",
            "16",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "encoder.safetensors").is_file()
    assert "world size 2" in proc.stderr
