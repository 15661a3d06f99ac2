"""The package's shape, checked: one top-level import name, backend names only in the registry, readable units.

These are the acceptance rules of the design review (issue 13); each test names what breaks the rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("dermedge", "training", "export")  # installed as dermedge, dermedge.training, dermedge.export
MAX_FUNCTION_LINES = 60  # code lines, docstring excluded
MAX_FILE_LINES = 500
# Longer functions, each with its reason.
LONG_FUNCTIONS = {
    "dermedge/backends/tensorrt.py:TensorRtBackend.__init__": "the TensorRT 10 engine set-up in API order; no GPU "
    "here to verify a restructuring against, so it stays as written and reviewed",
    "export/app_model.py:preprocess_nodes": "one ONNX node list read top to bottom (resize, crop, layout, "
    "normalisation); splitting it scatters a single graph",
}
BACKEND_NAME = r"[\"'](?:onnxruntime|openvino|tensorrt)[\"']"
COMPARISON = re.compile(
    rf"(?:[=!]=\s*{BACKEND_NAME})|(?:{BACKEND_NAME}\s*(?:[=!]=|(?:not\s+)?in\b))|(?:\bin\s+\([^)]*{BACKEND_NAME})"
)


def _package_files() -> list[Path]:
    return sorted(p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py"))


def test_backend_names_are_compared_only_inside_dermedge_backends() -> None:
    offenders = []
    for path in _package_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("dermedge/backends/"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if COMPARISON.search(line.split("#")[0]):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "branch on the registry row instead:\n" + "\n".join(offenders)


def _function_lengths(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = child.body
                start = body[0].lineno
                if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                    start = body[1].lineno if len(body) > 1 else body[0].end_lineno or start
                out[f"{prefix}{child.name}"] = (child.end_lineno or start) - start + 1
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text()), "")
    return out


def test_no_function_is_longer_than_60_lines_without_a_reason() -> None:
    long = []
    for path in _package_files():
        rel = path.relative_to(ROOT).as_posix()
        for name, n in _function_lengths(path).items():
            if n > MAX_FUNCTION_LINES and f"{rel}:{name}" not in LONG_FUNCTIONS:
                long.append(f"{rel}:{name} ({n} lines)")
    assert not long, "split these (or add the reason to LONG_FUNCTIONS):\n" + "\n".join(long)
    for key in LONG_FUNCTIONS:  # a stale exemption hides nothing
        rel, name = key.split(":")
        assert _function_lengths(ROOT / rel).get(name, 0) > MAX_FUNCTION_LINES, f"{key} is short now: drop it"


def test_no_module_is_longer_than_500_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)} ({n})"
        for p in _package_files()
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert not long, long


def test_nothing_imports_the_folders_by_their_generic_names() -> None:
    """training/ and export/ install as dermedge.training and dermedge.export; a bare `import training` would
    pick up a user's own folder of that name."""
    offenders = []
    for d in (*PACKAGE_DIRS, "benchmarks", "tests", "examples"):
        for path in (ROOT / d).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    if name.split(".")[0] in ("training", "export"):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not offenders, offenders
