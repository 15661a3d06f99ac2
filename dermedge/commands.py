"""Runtime CLI subcommands: ``info``, ``classify``, ``embed``, ``fit-head``, ``verify``, ``sign``.

Each is a thin call into the library; see ``dermedge.cli`` for registration and exit codes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dermedge._files import FileRefused, sha256_regular
from dermedge.cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, add_common
from dermedge.errors import DermedgeError
from dermedge.loading import load_model
from dermedge.model import Model
from dermedge.preprocess import MAX_FILE_BYTES, is_image_path


# -- helpers ---------------------------------------------------------------------------------
def expand_inputs(items: Iterable[str]) -> tuple[list[str], list[str]]:
    """Files are taken as given; folders are walked recursively for image extensions.

    Returns:
        (inputs to process, files inside folders that were not images and were ignored).
    """
    inputs: list[str] = []
    ignored: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    full = os.path.join(root, f)
                    (inputs if is_image_path(f) else ignored).append(full)
        else:
            inputs.append(item)  # missing or odd paths fail later with a reason, never silently
    return inputs, ignored


class Progress:
    """A progress bar on stderr when it is a terminal (tqdm if installed, else a plain counter)."""

    def __init__(self, total: int, desc: str) -> None:
        self.enabled = sys.stderr.isatty()
        self.total, self.desc, self.done, self.start = total, desc, 0, time.perf_counter()
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
        else:
            rate = self.done / max(1e-9, time.perf_counter() - self.start)
            print(f"\r{self.desc}: {self.done}/{self.total} ({rate:.0f} img/s)", end="", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def _load(args: argparse.Namespace, bundle: str | None = None) -> Model:
    return load_model(
        bundle if bundle is not None else getattr(args, "bundle", None),
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        threads=args.threads,
    )


def _emit(obj: Any) -> None:
    print(json.dumps(obj, default=_json_default), flush=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _report_failures(failures: list[tuple[str, str]], ignored: list[str]) -> None:
    if ignored:
        print(
            f"note: {len(ignored)} non-image files in the given folders were not processed "
            f"(e.g. {ignored[0]}); pass them explicitly to try them",
            file=sys.stderr,
        )
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for src, reason in failures:
            print(f"  {src}: {reason}", file=sys.stderr)


# -- info ------------------------------------------------------------------------------------
def add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", nargs="?", help="bundle directory or .dermedge (default: the built-in model)")
    add_common(p, bundle_positional=True)


def run_info(args: argparse.Namespace) -> int:
    from dermedge.backends import available_backends
    from dermedge.info_text import format_info

    with _load(args, args.bundle) as model:
        info = model.info()
    info["installed_backends"] = available_backends()
    if args.json:
        _emit(info)
    else:
        print(format_info(info))
    return EXIT_OK


# -- classify --------------------------------------------------------------------------------
def add_classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (recursive)")
    add_common(p)
    p.add_argument("--top-k", type=int, default=3, help="labels to show per image (default 3)")
    p.add_argument("--batch-size", type=int, default=16)


def run_classify(args: argparse.Namespace) -> int:
    inputs, ignored = expand_inputs(args.inputs)
    if not inputs:
        print("error: no images found in the given inputs", file=sys.stderr)
        return EXIT_USAGE
    failures: list[tuple[str, str]] = []
    with _load(args) as model:
        progress = Progress(len(inputs), "classify")
        for r in model.iter_results(inputs, classify=True, top_k=args.top_k, batch_size=args.batch_size):
            progress.update()
            if r.error is not None:
                failures.append((r.source, r.error.reason))
                if args.json:
                    _emit({"path": r.source, "error": r.error.reason})
                continue
            pred = r.prediction
            assert pred is not None
            if args.json:
                _emit(
                    {
                        "path": r.source,
                        "label": pred.label,
                        "score": pred.score,
                        "scores": pred.scores,
                        "top_k": [list(t) for t in pred.top_k],
                        "abstain": pred.abstain,
                        "ood_score": pred.ood_score,
                    }
                )
            else:
                tops = ", ".join(f"{lab} {p:.2f}" for lab, p in pred.top_k)
                flag = "\tABSTAIN (unlike the training photos)" if pred.abstain else ""
                print(f"{r.source}\t{pred.label}\t{pred.score:.3f}\t[{tops}]{flag}")
        progress.close()
    _report_failures(failures, ignored)
    return EXIT_PARTIAL if failures else EXIT_OK


# -- embed -----------------------------------------------------------------------------------
def add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (recursive)")
    p.add_argument("--out", required=True, help="store: FILE.sqlite (resumable, commit per batch) or FILE.npz")
    add_common(p)
    p.add_argument("--batch-size", type=int, default=16)


def _file_hash(path: str) -> str | None:
    try:
        return sha256_regular(path, max_bytes=MAX_FILE_BYTES)
    except FileRefused:
        return None  # the embed step reports why it cannot be read (never blocks: FIFOs are refused unread)


def run_embed(args: argparse.Namespace) -> int:
    from dermedge.store import open_store

    inputs, ignored = expand_inputs(args.inputs)
    failures: list[tuple[str, str]] = []
    embedded = skipped = 0
    start = time.perf_counter()
    with _load(args) as model:
        store = open_store(args.out, model.model_id)
        try:
            todo: list[tuple[str, str]] = []  # (absolute path, hash)
            for item in inputs:
                absolute = os.path.abspath(item)
                digest = _file_hash(item) or ""
                if digest and store.has(absolute, digest):
                    skipped += 1
                else:
                    todo.append((absolute, digest))
            progress = Progress(len(todo), "embed")
            batch: list[tuple[str, str, np.ndarray]] = []
            for r in model.iter_results([p for p, _ in todo], batch_size=args.batch_size):
                progress.update()
                path, digest = todo[r.index]
                if r.error is not None:
                    failures.append((r.source, r.error.reason))
                    if args.json:
                        _emit({"path": r.source, "error": r.error.reason})
                    continue
                assert r.embedding is not None
                batch.append((path, digest, r.embedding))
                if args.json:
                    _emit({"path": r.source, "embedded": True})
                if len(batch) >= args.batch_size:
                    store.add(batch)
                    embedded += len(batch)
                    batch = []
            if batch:
                store.add(batch)
                embedded += len(batch)
            progress.close()
        finally:
            store.close()
        summary = {
            "embedded": embedded,
            "failed": len(failures),
            "skipped": skipped,
            "ignored_non_images": len(ignored),
            "out": args.out,
            "model_id": model.model_id,
            "dim": model.embed_dim,
            "seconds": round(time.perf_counter() - start, 3),
            "failures": [{"path": s, "error": e} for s, e in failures],
        }
    if args.json:
        _emit(summary)
    else:
        print(f"embedded {embedded}, skipped {skipped} (already in {args.out}), failed {len(failures)}")
    _report_failures(failures, ignored)
    return EXIT_PARTIAL if failures else EXIT_OK


# -- fit-head --------------------------------------------------------------------------------
def add_fit_head(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help="folder of class sub-folders, a CSV with path,label (optional group column), or a folder with labels.csv",
    )
    p.add_argument("--out", required=True, help="new bundle directory (or NAME.dermedge zip)")
    add_common(p)
    p.add_argument("--name", help="name of the new bundle (default: <source name>-head)")
    p.add_argument(
        "--group-column",
        default="auto",
        help="CSV column with patient/lesion ids for grouped cross-validation (auto: lesion_id or patient_id; none)",
    )
    p.add_argument("--l2", type=float, help="L2 strength (default: chosen by cross-validation)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument(
        "--label-map", help="JSON file mapping dataset labels to your labels; unmapped labels are dropped and counted"
    )
    p.add_argument("--overwrite", action="store_true")


def _labelled_for_head(
    samples: list[Any], label_map: str | None, group_column: str
) -> tuple[list[Any], list[str], list[str] | None]:
    """The labelled samples (mapped through ``--label-map``), their labels and CV groups; says what it left out."""
    mapping = json.loads(Path(label_map).read_text()) if label_map else None
    unlabeled = [s.path for s in samples if not s.label]
    unmapped = [s.path for s in samples if s.label and mapping is not None and s.label not in mapping]
    samples = [s for s in samples if s.label and (mapping is None or s.label in mapping)]
    if unlabeled or unmapped:
        print(
            f"note: {len(unlabeled)} images without a label and {len(unmapped)} with a label outside --label-map "
            "were not used",
            file=sys.stderr,
        )
    labels = [mapping[s.label] if mapping else s.label for s in samples]
    if group_column == "none":
        return samples, labels, None
    if group_column == "auto":
        return samples, labels, [s.group for s in samples]
    return samples, labels, [s.meta.get(group_column) or s.path for s in samples]


def run_fit_head(args: argparse.Namespace) -> int:
    from dermedge.datasets import discover

    try:
        samples = discover(args.data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    samples, labels, groups = _labelled_for_head(samples, args.label_map, args.group_column)
    failures: list[tuple[str, str]] = []
    with _load(args) as model:
        progress = Progress(len(samples), "embed")
        keep_emb, keep_lab, keep_grp = [], [], []
        for r in model.iter_results([s.path for s in samples]):
            progress.update()
            if r.error is not None:
                failures.append((r.source, r.error.reason))
                continue
            assert r.embedding is not None
            keep_emb.append(r.embedding)
            keep_lab.append(labels[r.index])
            keep_grp.append(groups[r.index] if groups else None)
        progress.close()
        fitted = model.fit_head(
            np.stack(keep_emb), keep_lab, groups=keep_grp if groups else None, l2=args.l2, folds=args.folds
        )
        out = fitted.save(
            args.out,
            name=args.name or f"{model.manifest.name}-head",
            overwrite=args.overwrite,
            provenance={"head_data": [str(d) for d in args.data], "head_command": "dermedge " + " ".join(sys.argv[1:])},
        )
    metrics = fitted.head.metrics if fitted.head else {}
    if args.json:
        _emit(
            {
                "out": str(out),
                "labels": list(fitted.labels),
                "metrics": metrics,
                "failed": len(failures),
                "failures": [{"path": s, "error": e} for s, e in failures],
            }
        )
    else:
        cv = metrics.get("cv", {})
        print(
            f"wrote {out}: {len(fitted.labels)} labels, {metrics.get('n_samples')} images, "
            f"{metrics.get('cv_folds')}-fold CV{' (grouped)' if metrics.get('grouped') else ''}: "
            f"macro-F1 {cv.get('macro_f1', float('nan')):.3f}, "
            f"balanced acc {cv.get('balanced_accuracy', float('nan')):.3f}, "
            f"AUROC {cv.get('auroc_ovr_macro', float('nan')):.3f}, ECE {cv.get('ece', float('nan')):.3f} "
            f"(T={metrics.get('temperature', 1):.2f}, l2={metrics.get('l2')})"
        )
    _report_failures(failures, [])
    return EXIT_PARTIAL if failures else EXIT_OK


# -- verify / sign ---------------------------------------------------------------------------
def add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory or .dermedge file")
    p.add_argument("--pubkey", action="append", help="trusted ed25519 public key (PEM); repeatable")
    p.add_argument("--no-run", action="store_true", help="only check files, do not run each artifact")
    p.add_argument("--json", action="store_true")


def _verify_rows(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from dermedge.backends import is_installed
    from dermedge.bundle import open_bundle

    with open_bundle(args.bundle) as bundle:
        refs = bundle.verify_all()
        yield {"check": "checksums", "ok": True, "detail": f"{len(refs)} files match their sha256"}
        if args.pubkey:
            from dermedge.signing import verify_signature

            verify_signature(bundle, args.pubkey)
            yield {"check": "signature", "ok": True, "detail": "valid signature by a trusted key"}
        m = bundle.manifest
        if args.no_run:
            return
        for art in m.artifacts:
            name = f"run {art.backend}/{art.precision}"
            if not is_installed(art.backend):
                yield {"check": name, "ok": None, "detail": "skipped: backend not installed here"}
                continue
            try:
                with load_model(args.bundle, backend=art.backend, precision=art.precision) as model:
                    h, w = m.input.size
                    emb = model.embed(np.full((h, w, 3), 128, np.uint8))
                ok = emb.shape == (1, m.encoder.embed_dim) and bool(np.isfinite(emb).all())
                yield {"check": name, "ok": ok, "detail": f"output {emb.shape}, finite={bool(np.isfinite(emb).all())}"}
            except DermedgeError as exc:
                ok_skip = type(exc).__name__ == "BackendUnavailableError"
                yield {"check": name, "ok": None if ok_skip else False, "detail": str(exc)}


def run_verify(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    try:
        for row in _verify_rows(args):
            rows.append(row)
            if not args.json:
                mark = {True: "ok  ", False: "FAIL", None: "skip"}[row["ok"]]
                print(f"{mark}  {row['check']}: {row['detail']}")
    except DermedgeError as exc:
        rows.append({"check": "bundle", "ok": False, "detail": str(exc)})
        if not args.json:
            print(f"FAIL  {exc}")
    ok = all(r["ok"] is not False for r in rows)
    if args.json:
        _emit({"bundle": args.bundle, "ok": ok, "checks": rows})
    return EXIT_OK if ok else EXIT_FAILED


def add_sign(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", nargs="?", help="bundle directory to sign")
    p.add_argument("--key", help="ed25519 private key (PEM)")
    p.add_argument("--generate-key", nargs=2, metavar=("PRIVATE", "PUBLIC"), help="write a new key pair and exit")


def run_sign(args: argparse.Namespace) -> int:
    from dermedge.signing import generate_keypair, sign_bundle

    if args.generate_key:
        generate_keypair(*args.generate_key)
        print(f"wrote private key {args.generate_key[0]} (keep it secret) and public key {args.generate_key[1]}")
        return EXIT_OK
    if not args.bundle or not args.key:
        print("error: give BUNDLE and --key (or --generate-key PRIVATE PUBLIC)", file=sys.stderr)
        return EXIT_USAGE
    out = sign_bundle(args.bundle, args.key)
    print(f"signed {args.bundle} -> {out}")
    return EXIT_OK
