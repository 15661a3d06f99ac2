"""Where a training run came from: the commands that reproduce it (stage 1, its ``init_from`` chain, stage 2)
and their wall times, read from the run folders (``config.yaml``, ``finetune_config.json``, ``metrics.csv``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def training_provenance(recorded: dict[str, Any], run: Path) -> tuple[dict[str, Any], list[str]]:
    """The export's training record completed from the run's sidecar, with the command (and stage 1's) that
    reproduces it and their wall times; returns it and the command list."""
    training = dict(recorded)
    sidecar = json.loads((run / "encoder.json").read_text()) if (run / "encoder.json").is_file() else {}
    if recovered := _recovered_from_bundle(run, sidecar):  # the bundle's own record, then the recovery
        source, commands = recovered
        return {**(sidecar.get("training") or {}), "imported_from": source}, commands
    for key in ("pretrained_from", "pretrained_method", "pretrained_epochs", "labels", "train_on"):
        if key in sidecar:
            training[key] = sidecar[key]
    training["wall_time"] = run_wall_time(run)
    training["command"] = args_command(run)
    commands = [training["command"]]
    if sidecar.get("soup_of"):  # a weight average of stage-2 runs (dermedge.training.soup): each run, then the average
        ingredients = [Path(r) for r in sidecar["soup_of"]]
        training["soup_of"] = [
            {"run": str(r), "command": args_command(r), "wall_time": run_wall_time(r)} for r in ingredients
        ]
        soup_json = run / "soup.json"
        training["command"] = json.loads(soup_json.read_text())["command"] if soup_json.is_file() else "unknown"
        training["wall_time"] = "the runs' own, listed above"
        commands = [*(e["command"] for e in training["soup_of"]), training["command"]]
    if training.get("pretrained_from"):  # stage 2 of a two-stage model: record stage 1 too
        stage1 = Path(training["pretrained_from"])
        side1 = stage1 / "encoder.json"
        recovered = _recovered_from_bundle(stage1, json.loads(side1.read_text()) if side1.is_file() else {})
        if recovered:  # fine-tuned from an encoder recovered from a bundle: its commands, the recovery, this run
            training["stage1_command"], training["stage1_imported_from"] = recovered[0]["command"], recovered[0]
            return training, [*recovered[1], *commands]
        training["stage1_command"] = args_command(stage1)
        training["stage1_wall_time"] = run_wall_time(stage1)
        commands.insert(0, training["stage1_command"])
        from dermedge.training.checkpoint import continued_from, run_epochs  # run folders: training's to read

        earlier = continued_from(stage1)  # stage 1 itself continued finished runs (init_from): oldest first
        training["stage1_continued_from"] = [
            {"run": str(r), "epochs": run_epochs(r), "command": args_command(r), "wall_time": run_wall_time(r)}
            for r in earlier
        ]
        commands[:0] = [e["command"] for e in training["stage1_continued_from"]]
    return training, commands


def _recovered_from_bundle(run: Path, sidecar: dict[str, Any]) -> tuple[dict[str, Any], list[str]] | None:
    """For a run folder recovered from a bundle (``dermedge import-checkpoint --format bundle``): where from, and
    the bundle's recorded commands followed by the recovery; else None."""
    imported = sidecar.get("imported_from") or {}
    if imported.get("format") != "bundle":
        return None
    command = f"dermedge import-checkpoint --format bundle {imported['file']} --out {run}"
    source = {"bundle": imported["bundle"], "onnx_sha256": imported["onnx_sha256"], "command": command}
    return source, [*imported.get("commands", []), command]


def args_command(run: Path) -> str:
    """The command that produced a run folder: ``dermedge finetune`` or ``dermedge train`` with its options."""
    ft = run / "finetune_config.json"
    if ft.is_file():
        c = json.loads(ft.read_text())
        return (
            f"dermedge finetune --checkpoint {c['checkpoint']} --data {c['data']} --out {run} --epochs {c['epochs']} "
            f"--patience {c['patience']} --batch-size {c['batch_size']} --lr-encoder {c['lr_encoder']} "
            f"--lr-head {c['lr_head']} --label-smoothing {c['label_smoothing']} "
            f"--class-weight-power {c.get('class_weight_power', 1.0)} "
            f"--head-warmup-epochs {c.get('head_warmup_epochs', 0)} --augment {c['augment']}"
            + (f" --ema {c['ema']}" if c.get("ema") else "")
            + (f" --train-on {c['train_on']}" if c.get("train_on", "train") != "train" else "")
            + (f" --seed {c['seed']}" if c.get("seed", 0) else "")
            + (f" --mixup {c['mixup']}" if c.get("mixup", 0) else "")
            + (f" --colour-constancy {cc}" if (cc := c.get("colour_constancy", "inherit")) != "inherit" else "")
        )
    cfg = run / "config.yaml"
    if not cfg.is_file():
        return "unknown"
    import yaml

    c = yaml.safe_load(cfg.read_text())
    skip = ("simclr", False, "", "none", None)  # defaults: not spelled out
    extra = "".join(
        f" {k}={c[k]}" for k in ("augment", "cache", "colour_constancy", "init_from") if k in c and c[k] not in skip
    )
    return (
        f"dermedge train --method {c['method']} --arch {c['arch']} --data {' '.join(c['data'])} "
        f"--img-size {c['img_size']} "
        f"--epochs {c['epochs']} --batch-size {c['batch_size']} --lr {c['lr']} --num-workers {c['num_workers']} "
        f'--out {run} warmup_epochs={c["warmup_epochs"]} "method_kwargs={json.dumps(c["method_kwargs"])}"{extra}'
    )


def run_wall_time(run: Path) -> str:
    """Summed epoch seconds from a run's metrics.csv."""
    if not (run / "metrics.csv").is_file():
        return "see metrics.csv"
    rows = (run / "metrics.csv").read_text().strip().splitlines()[1:]
    secs = sum(float(r.split(",")[4]) for r in rows)
    return f"{secs / 3600:.2f} h over {len(rows)} epochs"
