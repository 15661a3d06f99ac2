"""``load_model``: a bundle from a local path -> a :class:`~dermedge.model.Model` on the chosen backend.

Nothing is ever downloaded. The backend is resolved through the registry (``dermedge.backends``), so this
module never branches on backend names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from dermedge.backends import BACKENDS, BackendOptions, get_entry, load_backend, pick_auto
from dermedge.bundle import open_bundle
from dermedge.cpu import native_bf16
from dermedge.heads import LinearHead
from dermedge.model import Model
from dermedge.preprocess import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)


def default_bundle_path() -> Path:
    """Where the bundle shipped inside the package lives."""
    return Path(str(resources.files("dermedge") / "models" / "default"))


def default_cache_dir() -> Path:
    """``$DERMEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/dermedge``, else ``~/.cache/dermedge``."""
    env = os.environ.get("DERMEDGE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dermedge"


def load_model(
    bundle: str | os.PathLike[str] | None = None,
    *,
    backend: str = "auto",
    precision: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    options: dict[str, Any] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    trusted_keys: Sequence[str | os.PathLike[str] | bytes] | None = None,
) -> Model:
    """Load a bundle from a local path (nothing is ever downloaded).

    Args:
        bundle: bundle directory or ``.dermedge`` zip; ``None`` loads the default bundle shipped in
            the package.
        backend: ``onnxruntime``, ``openvino``, ``tensorrt`` or ``auto`` (TensorRT on an NVIDIA GPU,
            OpenVINO on an Intel CPU, else ONNX Runtime; see ``model.selection_reason``).
        precision: ``fp32``, ``fp16``, ``bf16``, ``int8``, or ``None`` for the fastest one the bundle has
            (a ``bf16`` artifact only on a CPU with native BF16). Every artifact runs at the precision its
            export gate measured: ``model.inference_precision`` says what the runtime computes in.
        device: ``cpu`` (default), ``cuda[:N]``, ``gpu``, ``npu``, ``auto``; backend-dependent.
        threads: CPU threads for inference (default: the runtime's choice).
        cache_dir: compiled-model cache (OpenVINO, TensorRT); default ``default_cache_dir()``.
        options: backend-specific options (see each backend module).
        max_pixels: refuse larger images before decoding.
        verify: check every used file's sha256 against the manifest (leave on).
        trusted_keys: ed25519 public keys; when given, the bundle must carry a valid signature
            by one of them.

    Returns:
        The loaded :class:`Model`.

    Raises:
        BundleError: missing/invalid bundle, checksum mismatch, no artifact for the request, or a
            missing/invalid signature when ``trusted_keys`` are given.
        BackendUnavailableError: the backend's package or device is missing.
        BackendError: the runtime failed to load the model.

    Example:
        >>> with dermedge.load_model() as model:
        ...     print(model.classify("lesion.jpg")[0])
    """
    source = Path(bundle) if bundle is not None else default_bundle_path()
    if bundle is None and not source.exists():
        from dermedge.errors import BundleError

        raise BundleError(f"no default bundle is installed at {source}; pass the path of a bundle")
    opened = open_bundle(source)
    try:
        if trusted_keys is not None:
            from dermedge.signing import verify_signature

            verify_signature(opened, trusted_keys)
        manifest = opened.manifest
        reason = "requested"
        if backend == "auto":
            backend, reason = pick_auto(device, {a.backend for a in manifest.artifacts} & set(BACKENDS))
            logger.info("backend auto -> %s (%s)", backend, reason)
        get_entry(backend)  # an unknown name fails here, listing the known ones
        artifact = manifest.find_artifact(backend, precision, native_bf16=native_bf16())
        files = [opened.verify_file(f) if verify else opened.path_of(f) for f in artifact.files]
        opened.check_references(artifact)  # no external data outside the bundle or unlisted, even unverified
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / backend
        backend_obj = load_backend(
            backend,
            files[0],
            BackendOptions(
                device=device or get_entry(backend).default_device,
                threads=threads,
                cache_dir=str(cache),
                precision=artifact.precision,
                companions=tuple(str(f) for f in files[1:]),
                sha256=artifact.file.sha256,
                extra={**artifact.options, **(options or {})},
            ),
        )
        head = None
        if manifest.head is not None:
            hpath = opened.verify_file(manifest.head.file) if verify else opened.path_of(manifest.head.file)
            head = LinearHead.load(hpath, manifest.head.labels, manifest.head.temperature, manifest.head.metrics)
        return Model(opened, backend_obj, artifact, head, max_pixels=max_pixels, selection_reason=reason)
    except BaseException:
        opened.close()
        raise
