"""The ``dermedge`` command line: one entry point, subcommands registered in ``COMMANDS``.

Runtime subcommands live in ``dermedge.commands``; ``train``, ``eval``, ``export``, ``distill``,
``bench``, ``import-checkpoint`` and ``pack-data`` live in ``training/``, ``export/`` and ``benchmarks/`` and are
imported only when their name is on the command line (they need torch or other extras).

Exit codes: 0 all done; 1 nothing could be done (bad bundle, missing backend, ...); 2 usage error;
3 some inputs failed (the rest were processed, failures listed with reasons).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dermedge.errors import DermedgeError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


@dataclass(frozen=True)
class Command:
    """A subcommand: where its ``add_arguments(parser)`` and ``run(args) -> int`` live."""

    help: str
    module: str
    add_arguments: str
    run: str
    extra: str = ""  # pip extra it needs beyond the runtime


COMMANDS: dict[str, Command] = {
    "info": Command(
        "show a bundle's model, provenance, artifacts and backends", "dermedge.commands", "add_info", "run_info"
    ),
    "classify": Command("classify images or folders", "dermedge.commands", "add_classify", "run_classify"),
    "embed": Command(
        "embed images or folders into an .sqlite or .npz store", "dermedge.commands", "add_embed", "run_embed"
    ),
    "fit-head": Command(
        "fit a classification head on labelled photos and write a new bundle",
        "dermedge.commands",
        "add_fit_head",
        "run_fit_head",
    ),
    "verify": Command(
        "check a bundle's manifest, checksums, signature and that each artifact runs",
        "dermedge.commands",
        "add_verify",
        "run_verify",
    ),
    "sign": Command("sign a bundle directory with an ed25519 key", "dermedge.commands", "add_sign", "run_sign"),
    "train": Command(
        "self-supervised pre-training of an encoder",
        "dermedge.training.cli",
        "add_train_arguments",
        "run_train",
        "dermedge[train]",
    ),
    "finetune": Command(
        "stage 2: fine-tune an SSL encoder end to end on the labelled training split (HAM10000 + PAD-UFES-20)",
        "dermedge.training.finetune_cli",
        "add_finetune_arguments",
        "run_finetune",
        "dermedge[train]",
    ),
    "eval": Command(
        "frozen evaluation of an encoder (kNN, linear probe, few-shot, label efficiency)",
        "dermedge.training.eval_cli",
        "add_eval_arguments",
        "run_eval",
        "dermedge[train]",
    ),
    "pack-data": Command(
        "copy a data folder with every image re-encoded smaller (e.g. 160 px WebP), to carry to a GPU machine",
        "dermedge.training.pack",
        "add_arguments",
        "run",
        "dermedge[train]",
    ),
    "import-checkpoint": Command(
        "released SSL checkpoints (DINO/iBOT/SimCLR/BYOL) or a bundle's encoder -> a training checkpoint",
        "dermedge.training.importer",
        "add_arguments",
        "run",
        "dermedge[train]",
    ),
    "export": Command(
        "export a trained encoder to ONNX/OpenVINO/TensorRT, quantise, gate, write a bundle",
        "dermedge.export.cli",
        "add_export_arguments",
        "run_export",
        "dermedge[train,export]",
    ),
    "export-pipeline": Command(
        "write a bundle as one ONNX graph (pixels in; probabilities, embedding, abstain out) for apps in any language",
        "dermedge.export.app_model",
        "add_arguments",
        "run",
        "dermedge[export]",
    ),
    "distill": Command(
        "distil a large encoder into a small one",
        "dermedge.export.cli",
        "add_distill_arguments",
        "run_distill",
        "dermedge[train,export]",
    ),
    "bench": Command(
        "measure latency, throughput, memory and cold start on this device", "dermedge.bench", "add_arguments", "run"
    ),
}


def add_common(p: argparse.ArgumentParser, *, bundle_positional: bool = False) -> None:
    """Options shared by the runtime subcommands (kebab-case)."""
    if not bundle_positional:
        p.add_argument("--bundle", help="bundle directory or .dermedge file (default: the built-in model)")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime, openvino or tensorrt (default: auto)")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16", "int8"],
        help="default: the fastest in the bundle (bf16 only on a CPU with native BF16)",
    )
    p.add_argument("--device", help="cpu (default), cuda[:N], gpu, npu, auto")
    p.add_argument("--threads", type=int, help="inference threads (default: the runtime's choice)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON output on stdout")


def _load(cmd: Command, attr: str) -> Callable[..., Any]:
    module = importlib.import_module(cmd.module)
    return getattr(module, attr)  # type: ignore[no-any-return]


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Build the parser; only the chosen plug-in subcommand's module is imported."""
    from dermedge import __version__

    parser = argparse.ArgumentParser(
        prog="dermedge",
        description="Offline dermatology image embeddings and classification.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage error, 3 some inputs failed (see the listed reasons).",
    )
    parser.add_argument("--version", action="version", version=f"dermedge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if name != chosen:
            continue  # keep `dermedge --help` fast: only build the chosen command's arguments
        try:
            _load(cmd, cmd.add_arguments)(p)
        except ImportError as exc:
            missing = (
                f"`dermedge {name}` needs extra packages ({exc.name or exc}); "
                f"install them with: pip install '{cmd.extra or 'dermedge'}'"
            )
            p.description = f"{cmd.help}\n\nNot available in this Python: {missing}"
            p.set_defaults(_missing=missing)
        p.set_defaults(_command=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    try:
        args, unknown = parser.parse_known_args(args_list)
        if unknown and not getattr(args, "_missing", None):  # a missing extra is reported below, not as usage
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "_command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "_missing", None):
        print(f"error: {args._missing}", file=sys.stderr)
        return EXIT_FAILED
    cmd = COMMANDS[args._command]
    try:
        return int(_load(cmd, cmd.run)(args))
    except DermedgeError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
