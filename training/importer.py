"""``dermedge import-checkpoint``: the paper's released checkpoints -> our safetensors + JSON sidecar.

Layouts (see ``../shared/weights/README.md``): DINO/iBOT keep ``teacher`` (MultiCropWrapper:
``backbone.*`` + ``head.*``, maybe ``module.``) and ``config.model.base_model``; SimCLR keeps
``state_dict`` with ``model.`` on an ``nn.Sequential`` of ResNet-50 children; BYOL ``net.`` with
torchvision names; SimCLR-ImageNet ``convnet.``. Files are opened with ``torch.load(weights_only=True)``
only: a checkpoint that needs arbitrary pickled objects is refused and its globals are listed.
``--format bundle`` recovers a dermedge bundle's own encoder from its FP32 ONNX file instead (``from_bundle.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickletools
import sys
import zipfile
from pathlib import Path
from typing import Any

FORMATS = ("dino", "ibot", "simclr", "byol", "simclr_imagenet")
VIT_NAMES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}
SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


class ImportRefused(Exception):
    """The file is not safe to load with weights_only=True, or not in the expected layout."""


def pickle_globals(path: Path) -> list[str]:
    """The ``module.name`` globals a torch zip checkpoint's pickle would import (read without executing)."""
    found: set[str] = set()
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            data = zf.read(name)
    except (zipfile.BadZipFile, StopIteration, OSError):
        return []
    strings: list[str] = []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(str(arg))
        elif op.name == "GLOBAL":
            found.add(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]}.{strings[-1]}")
    return sorted(found)


def safe_load(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        globs = [g for g in pickle_globals(path) if not g.startswith(("torch.", "collections.OrderedDict"))]
        raise ImportRefused(
            f"{path} cannot be loaded with weights_only=True (it pickles arbitrary objects: "
            f"{', '.join(globs[:10]) or 'unknown'}). dermedge never unpickles code. Convert it in a throwaway "
            "environment you trust (see shared/weights/README.md 'Loading safely') or re-save only the tensors."
        ) from exc
    if not isinstance(obj, dict):
        raise ImportRefused(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def _strip(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = {}
    for k, v in sd.items():
        k2 = k[len("module.") :] if k.startswith("module.") else k
        if k2.startswith(prefix):
            out[k2[len(prefix) :]] = v
    return out


def convert(
    ckpt: dict[str, Any], fmt: str, arch: str | None = None, branch: str = "teacher"
) -> tuple[str, dict[str, Any]]:
    """Return (timm architecture, backbone state dict) for a loaded checkpoint dict."""
    if fmt in ("dino", "ibot"):
        if branch not in ckpt:
            raise ImportRefused(f"checkpoint has no {branch!r} entry (keys: {sorted(ckpt)[:10]})")
        base = arch or ((ckpt.get("config") or {}).get("model") or {}).get("base_model")
        if base is None:
            raise ImportRefused("architecture unknown: the checkpoint has no config.model.base_model; pass --arch")
        name = VIT_NAMES.get(base, base)
        sd = _strip(ckpt[branch], "backbone.")
        sd.pop("masked_embed", None)
        return name, sd
    sd = ckpt.get("state_dict")
    if sd is None:
        raise ImportRefused(f"checkpoint has no 'state_dict' (keys: {sorted(ckpt)[:10]})")
    name = arch or "resnet50"
    if fmt == "simclr":
        out = {}
        for k, v in _strip(sd, "model.").items():
            head, _, rest = k.partition(".")
            if head in SEQUENTIAL_RESNET:
                out[f"{SEQUENTIAL_RESNET[head]}.{rest}"] = v
        return name, out
    prefix = {"byol": "net.", "simclr_imagenet": "convnet."}[fmt]
    return name, {k: v for k, v in _strip(sd, prefix).items() if not k.startswith("fc.")}


def import_checkpoint(
    path: Path,
    fmt: str,
    out: Path,
    *,
    arch: str | None = None,
    branch: str = "teacher",
    expected: Path | None = None,
    paper_embedding: bool = False,
) -> Path:
    """Convert, load into the timm model strictly, and write ``out`` (.safetensors) + ``out`` .json sidecar."""
    from dermedge.training.encoders import create_encoder
    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise ImportRefused(f"format must be one of {FORMATS}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name, sd = convert(safe_load(path), fmt, arch, branch)
    model = create_encoder(name, 224)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ImportRefused(f"weights do not fit timm {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    known = None
    if expected is not None and expected.is_file():
        files = json.loads(expected.read_text()).get("files", [])
        known = next((f for f in files if f.get("lfs_sha256") == digest), None)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    is_vit = name.startswith("vit_")
    last4 = paper_embedding and is_vit
    sidecar = {
        "arch": name,
        "img_size": 224,
        "embed_dim": int(model.num_features) * (4 if last4 else 1),
        "pooling": "last4_cls" if last4 else "default",
        "method": f"imported:{fmt}",
        "source_file": str(path),
        "source_sha256": digest,
        "matches_release": known["path"] if known else None,
        "license": (
            "none found for the released checkpoints (all rights reserved by default); "
            "ask the authors before redistributing"
        ),
        "preprocessing": "paper: Resize((256,256)) -> CenterCrop(224) -> ImageNet mean/std",
        "embedding_recipe": (
            "paper ViT: concat of the normed CLS after each of the last 4 blocks (4 x D)"
            if last4
            else "timm default pooled output (last CLS after norm)"
            if is_vit
            else "global average pool of layer4"
        ),
        "trained_by": "Gröger et al. 2024 (imported)",
        "timm_kwargs": {},
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="released checkpoint (.pth / .pth.tar), or a dermedge bundle with --format bundle")
    p.add_argument(
        "--format",
        required=True,
        choices=(*FORMATS, "bundle"),
        help="bundle: recover a dermedge bundle's encoder weights from its FP32 ONNX file (training/from_bundle.py)",
    )
    p.add_argument("--arch", help="override the architecture (e.g. vit_small, resnet50)")
    p.add_argument("--branch", default="teacher", choices=["teacher", "student"], help="DINO/iBOT: which network")
    p.add_argument("--expected", help="expected_checkpoints.json to match the file's sha256 against")
    p.add_argument(
        "--paper-embedding",
        action="store_true",
        help="ViTs: embed as the paper does (CLS of the last 4 blocks, concatenated: 4 x D)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output .safetensors (a .json sidecar is written beside it), or a run folder that gets "
        "encoder.safetensors + encoder.json",
    )


def run(args: argparse.Namespace) -> int:
    if args.format == "bundle":
        from dermedge.training.from_bundle import RecoveryRefused, import_bundle

        try:
            out = import_bundle(Path(args.file), Path(args.out))
        except RecoveryRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {out} and {out.with_suffix('.json')} (recovered from {args.file}, checked against its ONNX file)")
        return 0
    dest = Path(args.out) if args.out.endswith(".safetensors") else Path(args.out) / "encoder.safetensors"
    try:
        out = import_checkpoint(
            Path(args.file),
            args.format,
            dest,
            arch=args.arch,
            branch=args.branch,
            expected=Path(args.expected) if args.expected else None,
            paper_embedding=args.paper_embedding,
        )
    except ImportRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
