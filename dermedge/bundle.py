"""Model bundles: a directory (or the same content zipped as ``NAME.dermedge``) with a ``manifest.json``.

The manifest is parsed into frozen dataclasses. Every file the runtime uses is checked against its
sha256 before use. Nothing in a bundle is ever unpickled or executed: weights are ONNX/OpenVINO IR
files opened by their runtime, and heads are ``.npz`` arrays read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from dermedge._files import FileRefused, check_regular, read_regular, sha256_regular
from dermedge._onnx_refs import MalformedOnnx, external_data_locations
from dermedge.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
BUNDLE_SUFFIX = ".dermedge"
MAX_MANIFEST_BYTES = 16 << 20
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
RESIZE_POLICIES = ("shorter_side", "squash")
INTERPOLATIONS = ("linear", "area", "cubic", "nearest")


@dataclass(frozen=True)
class FileRef:
    """One file inside the bundle with its expected checksum and size."""

    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Artifact:
    """An encoder file for one backend at one precision.

    Attributes:
        backend: registry name of the runtime that opens it (``onnxruntime``, ``openvino``, ``tensorrt``).
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``: what it runs at and was gated at.
        format: ``onnx``, ``openvino_ir`` or ``tensorrt_engine``.
        file: the main file (``.onnx``, ``.xml``, ``.engine``).
        companions: further files the main one needs (the ``.bin`` of an OpenVINO IR).
        options: backend options recorded at export time (e.g. an ONNX Runtime optimisation level).
        gate: the accuracy-gate result recorded at export time, if any.
    """

    backend: str
    precision: str
    format: str
    file: FileRef
    companions: tuple[FileRef, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> tuple[FileRef, ...]:
        """The main file followed by its companions."""
        return (self.file, *self.companions)


def default_resize(crop: int) -> int:
    """The shorter side an image is resized to before a ``crop`` x ``crop`` centre crop: 8/7 of it, rounded
    half to even (Python's ``round``), as in training, export and the yardstick alike (224 -> 256, 160 -> 183)."""
    return round(crop * 8 / 7)


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the encoder's input tensor; every number comes from the manifest."""

    size: tuple[int, int]  # (height, width) of the network input
    resize_size: int  # shorter side (or both sides for "squash") before the centre crop
    resize: str = "shorter_side"
    crop: str = "center"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"
    interpolation: str = "linear"


@dataclass(frozen=True)
class EncoderInfo:
    """What the encoder is: its timm architecture name, size and embedding dimension."""

    arch: str
    embed_dim: int
    params: int | None = None
    flops: int | None = None
    pooling: str = "default"
    trained_by: str = ""


@dataclass(frozen=True)
class HeadInfo:
    """The classification head stored in the bundle (weights in ``.npz``)."""

    type: str
    file: FileRef
    labels: tuple[str, ...]
    temperature: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json``. Build one with :func:`parse_manifest`, never by hand."""

    schema_version: int
    name: str
    version: str
    created: str
    encoder: EncoderInfo
    input: InputSpec
    artifacts: tuple[Artifact, ...]
    head: HeadInfo | None
    provenance: dict[str, Any]
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def find_artifact(self, backend: str, precision: str | None, *, native_bf16: bool = False) -> Artifact:
        """Return the artifact for ``backend`` at ``precision`` (``None``: the fastest one that applies).

        With ``precision=None`` the order is INT8, BF16, FP16, FP32, but a ``bf16`` artifact is taken only
        when ``native_bf16`` (the CPU computes bfloat16 in hardware) and its export gate passed.

        Raises:
            BundleError: the bundle has no artifact for that backend/precision; the message lists
                what it does have.
        """
        candidates = [a for a in self.artifacts if a.backend == backend]
        if precision is not None:
            if precision not in PRECISIONS:
                raise BundleError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
            candidates = [a for a in candidates if a.precision == precision]
        else:
            candidates = [
                a for a in candidates if a.precision != "bf16" or (native_bf16 and a.gate.get("status") == "pass")
            ]
        if not candidates:
            have = ", ".join(f"{a.backend}/{a.precision}" for a in self.artifacts) or "none"
            want = f"{backend}/{precision or 'any precision'}"
            raise BundleError(f"bundle {self.name!r} has no artifact for {want}; it has: {have}")
        order = {"int8": 0, "bf16": 1, "fp16": 2, "fp32": 3}
        return sorted(candidates, key=lambda a: order.get(a.precision, 9))[0]

    @property
    def model_id(self) -> str:
        """A short stable identifier of name, version and encoder content (for embedding stores)."""
        digest = hashlib.sha256("".join(a.file.sha256 for a in self.artifacts).encode()).hexdigest()[:12]
        return f"{self.name}@{self.version}:{digest}"


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {"str": "a string", "int": "an integer", "float": "a number", "dict": "an object", "list": "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _found(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_type(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """``value`` if it is of ``kind`` (bools are not numbers; ints count as floats), else BundleError."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise BundleError(f"manifest: {where} must be {_kind_name(kind)}, found {_found(value)}")
    return value


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise BundleError(f"manifest: {where} is missing the required key {key!r}")
    return _check_type(obj[key], kind, f"{where}.{key}")


def _optional(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    """``obj[key]`` checked against ``kind``; ``default`` when absent or null."""
    value = obj.get(key)
    return default if value is None else _check_type(value, kind, f"{where}.{key}")


def _finite(value: Any, where: str) -> float:
    _check_type(value, float, where)
    if not math.isfinite(float(value)):
        raise BundleError(f"manifest: {where} must be a finite number, found {value!r}")
    return float(value)


def _numbers(obj: dict[str, Any], key: str, where: str, n: int) -> tuple[float, ...]:
    values = _require(obj, key, list, where)
    if len(values) != n:
        raise BundleError(f"manifest: {where}.{key} must have {n} numbers, found {len(values)}: {_found(values)}")
    return tuple(_finite(v, f"{where}.{key}[{i}]") for i, v in enumerate(values))


def _choice(obj: dict[str, Any], key: str, where: str, choices: tuple[str, ...], default: str) -> str:
    value = _optional(obj, key, str, where, default)
    if value not in choices:
        raise BundleError(f"manifest: {where}.{key} must be one of {', '.join(choices)}, found {value!r}")
    return str(value)


def _file_ref(obj: Any, where: str) -> FileRef:
    _check_type(obj, dict, where)
    path = _require(obj, "path", str, where)
    _check_member_name(path, f"manifest {where}.path")
    sha = _require(obj, "sha256", str, where)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise BundleError(f"manifest: {where}.sha256 must be 64 lowercase hex digits, found {sha!r}")
    size = _require(obj, "bytes", int, where)
    if size < 0:
        raise BundleError(f"manifest: {where}.bytes must be >= 0, found {size}")
    return FileRef(path=path, sha256=sha, bytes=size)


def _parse_encoder(data: dict[str, Any]) -> EncoderInfo:
    enc = _require(data, "encoder", dict, "manifest")
    embed_dim = _require(enc, "embed_dim", int, "encoder")
    if embed_dim < 1:
        raise BundleError(f"manifest: encoder.embed_dim must be >= 1, found {embed_dim}")
    return EncoderInfo(
        arch=_require(enc, "arch", str, "encoder"),
        embed_dim=embed_dim,
        params=_optional(enc, "params", int, "encoder", None),
        flops=_optional(enc, "flops", int, "encoder", None),
        pooling=_optional(enc, "pooling", str, "encoder", "default"),
        trained_by=_optional(enc, "trained_by", str, "encoder", ""),
    )


def _parse_input(data: dict[str, Any]) -> InputSpec:
    inp = _require(data, "input", dict, "manifest")
    size = _require(inp, "size", list, "input")
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise BundleError(f"manifest: input.size must be [height, width] positive integers, found {_found(size)}")
    std = _numbers(inp, "std", "input", 3)
    if any(s <= 0 for s in std):
        raise BundleError(f"manifest: input.std values must be > 0, found {list(std)}")
    resize_size = _require(inp, "resize_size", int, "input")
    if resize_size < 1:
        raise BundleError(f"manifest: input.resize_size must be >= 1, found {resize_size}")
    spec = InputSpec(
        size=(int(size[0]), int(size[1])),
        resize_size=resize_size,
        resize=_choice(inp, "resize", "input", RESIZE_POLICIES, "shorter_side"),
        crop=_choice(inp, "crop", "input", ("center",), "center"),
        mean=_numbers(inp, "mean", "input", 3),  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        channel_order=_choice(inp, "channel_order", "input", ("RGB", "BGR"), "RGB"),
        interpolation=_choice(inp, "interpolation", "input", INTERPOLATIONS, "linear"),
    )
    if spec.resize == "shorter_side" and spec.resize_size < max(spec.size):
        raise BundleError(f"manifest: input.resize_size {spec.resize_size} is smaller than the crop {spec.size}")
    return spec


def _parse_artifact(art: Any, where: str) -> Artifact:
    _check_type(art, dict, where)
    companions = _optional(art, "companions", list, where, [])
    precision = _require(art, "precision", str, where)
    if precision not in PRECISIONS:
        raise BundleError(f"manifest: {where}.precision {precision!r} unknown; expected one of {', '.join(PRECISIONS)}")
    return Artifact(
        backend=_require(art, "backend", str, where),
        precision=precision,
        format=_require(art, "format", str, where),
        file=_file_ref(art, where),
        companions=tuple(_file_ref(c, f"{where}.companions[{j}]") for j, c in enumerate(companions)),
        options=dict(_optional(art, "options", dict, where, {})),
        gate=dict(_optional(art, "gate", dict, where, {})),
    )


def _parse_head(data: dict[str, Any]) -> HeadInfo | None:
    if data.get("head") is None:
        return None
    h = _require(data, "head", dict, "manifest")
    labels = _require(h, "labels", list, "head")
    if not labels or not all(isinstance(x, str) for x in labels):
        raise BundleError(f"manifest: head.labels must be a non-empty list of strings, found {_found(labels)}")
    temperature = _finite(h.get("temperature", 1.0), "head.temperature")
    if not temperature > 0:
        raise BundleError(f"manifest: head.temperature must be > 0, found {temperature}")
    return HeadInfo(
        type=_require(h, "type", str, "head"),
        file=_file_ref(h, "head"),
        labels=tuple(labels),
        temperature=temperature,
        metrics=dict(_optional(h, "metrics", dict, "head", {})),
    )


def parse_manifest(data: dict[str, Any]) -> Manifest:
    """Validate a manifest dictionary and turn it into a :class:`Manifest`.

    Raises:
        BundleError: a key is missing or a value has the wrong type or range (the message names the
            field, what was expected and what was found), or the schema version is unknown.
    """
    if not isinstance(data, dict):
        raise BundleError(f"manifest: top level must be a JSON object, found {type(data).__name__}")
    version = _require(data, "schema_version", int, "manifest")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"manifest: schema_version {version} is not supported by this dermedge "
            f"(it reads schema_version {SCHEMA_VERSION}); upgrade dermedge or re-export the bundle"
        )
    artifacts = tuple(
        _parse_artifact(art, f"artifacts[{i}]") for i, art in enumerate(_require(data, "artifacts", list, "manifest"))
    )
    if not artifacts:
        raise BundleError("manifest: artifacts is empty; a bundle needs at least one encoder file")
    return Manifest(
        schema_version=version,
        name=_require(data, "name", str, "manifest"),
        version=_require(data, "version", str, "manifest"),
        created=_optional(data, "created", str, "manifest", ""),
        encoder=_parse_encoder(data),
        input=_parse_input(data),
        artifacts=artifacts,
        head=_parse_head(data),
        provenance=dict(_optional(data, "provenance", dict, "manifest", {})),
        description=_optional(data, "description", str, "manifest", ""),
        raw=data,
    )


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a regular file, read in 1 MiB chunks.

    Raises:
        FileRefused: not a regular file (a FIFO or device would block or never end) or unreadable.
    """
    return sha256_regular(path)


def _check_member_name(name: str, where: str) -> None:
    """Refuse absolute paths, drive letters, backslashes and ``..`` components."""
    pure = PurePosixPath(name)
    if (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or (len(name) > 1 and name[1] == ":")
        or ".." in pure.parts
    ):
        raise BundleError(f"{where}: refusing unsafe path {name!r} (absolute, drive letter or '..')")


class Bundle:
    """An opened bundle: its root directory and parsed manifest.

    Zipped bundles (``*.dermedge``) are extracted, after every member name has been checked, into a
    private temporary directory that :meth:`close` removes.
    """

    def __init__(self, root: Path, manifest: Manifest, *, source: Path, cleanup_dir: Path | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.source = source
        self._cleanup_dir = cleanup_dir

    def path_of(self, ref: FileRef) -> Path:
        """Absolute path of a file in the bundle."""
        return self.root / ref.path

    def verify_file(self, ref: FileRef) -> Path:
        """Check a file's existence, size and sha256; return its path.

        Raises:
            BundleError: the file is missing or its size or checksum differs from the manifest.
        """
        path = self.path_of(ref)
        if not path.exists() and not path.is_symlink():
            raise BundleError(f"bundle {self.source}: file {ref.path!r} listed in the manifest is missing")
        try:
            size = check_regular(path).st_size
        except FileRefused as exc:
            raise BundleError(f"bundle {self.source}: {ref.path!r} {exc.reason}") from None
        if size != ref.bytes:
            raise BundleError(
                f"bundle {self.source}: {ref.path!r} has {size} bytes, the manifest expects {ref.bytes}; "
                "the file is truncated or was replaced"
            )
        try:
            digest = sha256_regular(path, max_bytes=ref.bytes)
        except FileRefused as exc:
            raise BundleError(f"bundle {self.source}: {ref.path!r} {exc.reason}") from None
        if digest != ref.sha256:
            raise BundleError(
                f"bundle {self.source}: checksum mismatch for {ref.path!r}: expected sha256 {ref.sha256}, "
                f"found {digest}; the file is corrupt or was modified"
            )
        return path

    def check_references(self, artifact: Artifact) -> None:
        """Refuse an encoder that would make its runtime open a file the manifest does not list.

        ONNX models may keep tensors in external files named by a ``location`` relative to the model;
        every such file must lie inside the bundle and be one of the artifact's listed (checksummed)
        files. An OpenVINO IR's ``.bin`` must be listed too.

        Raises:
            BundleError: a reference outside the bundle, to an unlisted file, or an unparseable ONNX file.
        """
        listed = {f.path for f in artifact.files}
        main = artifact.file.path
        if artifact.format == "openvino_ir":
            weights = str(PurePosixPath(main).with_suffix(".bin"))
            if weights not in listed:
                raise BundleError(
                    f"bundle {self.source}: {main!r} reads its weights from {weights!r}, which the manifest does not "
                    "list for this artifact; refusing an unchecked file"
                )
            return
        if artifact.format != "onnx":
            return
        try:
            locations = external_data_locations(read_regular(self.path_of(artifact.file), artifact.file.bytes))
        except FileRefused as exc:
            raise BundleError(f"bundle {self.source}: {main!r} {exc.reason}") from None
        except MalformedOnnx as exc:
            raise BundleError(f"bundle {self.source}: {main!r} is not a well-formed ONNX file ({exc})") from None
        root = self.root.resolve()
        for loc in locations:
            target = (self.path_of(artifact.file).parent / loc).resolve()
            inside = target.is_relative_to(root)
            rel = target.relative_to(root).as_posix() if inside else None
            if not inside or loc.startswith(("/", "\\")) or ":" in loc[:2]:
                raise BundleError(
                    f"bundle {self.source}: {main!r} refers to external data {loc!r} outside the bundle; refusing it"
                )
            if rel not in listed:
                raise BundleError(
                    f"bundle {self.source}: {main!r} refers to external data {loc!r}, which the manifest does not "
                    "list (with a checksum) for this artifact; refusing an unchecked file"
                )

    def verify_all(self) -> list[FileRef]:
        """Verify every file the manifest lists; return them. Raises BundleError on the first bad one."""
        refs: list[FileRef] = []
        for art in self.manifest.artifacts:
            refs.extend(art.files)
        if self.manifest.head is not None:
            refs.append(self.manifest.head.file)
        seen: set[str] = set()
        for ref in refs:
            if ref.path not in seen:
                self.verify_file(ref)
                seen.add(ref.path)
        for art in self.manifest.artifacts:
            self.check_references(art)
        return refs

    def close(self) -> None:
        """Remove the extraction directory of a zipped bundle (no-op for directories)."""
        if self._cleanup_dir is not None:
            shutil.rmtree(self._cleanup_dir, ignore_errors=True)
            self._cleanup_dir = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_manifest_file(path: Path, source: Path) -> Manifest:
    """Read and parse ``manifest.json`` at ``path``; errors name the bundle ``source``."""
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"bundle {source}: no {MANIFEST_NAME} found (is this a dermedge bundle?)")
    try:
        data = json.loads(read_regular(path, MAX_MANIFEST_BYTES).decode("utf-8"))
    except FileRefused as exc:
        raise BundleError(f"bundle {source}: {MANIFEST_NAME} {exc.reason}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {source}: {MANIFEST_NAME} is not valid JSON: {exc}") from exc
    try:
        return parse_manifest(data)
    except BundleError as exc:
        raise BundleError(f"bundle {source}: {exc}") from None


def _extract_zip(path: Path) -> tuple[Path, Path]:
    """Extract a zipped bundle into a new temporary directory; return (bundle root, directory to remove)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"bundle {path}: not a readable zip archive ({exc})") from exc
    with archive:
        members = archive.infolist()
        for info in members:
            _check_member_name(info.filename, f"bundle {path}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise BundleError(f"bundle {path}: refusing symbolic link member {info.filename!r}")
        total = sum(i.file_size for i in members)
        if total > 4 << 30:
            raise BundleError(f"bundle {path}: members expand to {total} bytes (> 4 GiB); refusing")
        root = Path(tempfile.mkdtemp(prefix="dermedge-bundle-"))
        try:
            archive.extractall(root)
        except Exception:
            shutil.rmtree(root, ignore_errors=True)
            raise
    # A zip may hold the bundle at its root or inside one top-level folder.
    if not (root / MANIFEST_NAME).is_file():
        subdirs = [p for p in root.iterdir() if p.is_dir()]
        if len(subdirs) == 1 and (subdirs[0] / MANIFEST_NAME).is_file():
            return subdirs[0], root
    return root, root


def open_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open a bundle directory or ``.dermedge`` zip and parse its manifest (files are checked on use).

    Raises:
        BundleError: the path does not exist, is not a bundle, or the manifest is invalid.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise BundleError(f"bundle {source}: no such file or directory")
    if source.is_dir():
        return Bundle(source, read_manifest_file(source / MANIFEST_NAME, source), source=source)
    if zipfile.is_zipfile(source):
        root, tmp = _extract_zip(source)
        try:
            manifest = read_manifest_file(root / MANIFEST_NAME, source)
        except BundleError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Bundle(root, manifest, source=source, cleanup_dir=tmp)
    raise BundleError(f"bundle {source}: expected a bundle directory or a {BUNDLE_SUFFIX} zip file")
