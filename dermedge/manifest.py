"""The bundle manifest (``manifest.json``) as frozen dataclasses, and its validating parser.

Every field is checked for type and range, and an error names the field, what was expected and what was
found. Member paths are refused when absolute or climbing out (``..``). ``dermedge.bundle`` opens bundles.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from dermedge.errors import BundleError

SCHEMA_VERSION = 1  # what a bundle without schema-2 features is written as (readable by every dermedge)
SCHEMA_VERSIONS = (1, 2, 3, 4)  # 2 adds input.colour_constancy, 3 encoder.fine_stages, 4 input.exposure_target;
# a bundle that uses one is written with that schema, so an older dermedge refuses it instead of misreading it
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
BUNDLE_SUFFIX = ".dermedge"
MAX_MANIFEST_BYTES = 16 << 20
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
RESIZE_POLICIES = ("shorter_side", "squash")
INTERPOLATIONS = ("linear", "area", "cubic", "nearest")
COLOUR_CONSTANCY = ("none", "shades_of_gray")
EXPOSURE_GAIN_RANGE = (0.5, 2.5)  # a near-black photo is not amplified into noise, a white one not crushed


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
    # "shades_of_gray": Shades of Gray (p=6) on the resized image, before the crop (schema 2)
    colour_constancy: str = "none"
    # > 0 (schema 4): the resized image (after colour constancy) is scaled by one gain for all three channels,
    # target / its mean pixel value, bounded to ``exposure_gain_range``, and clipped to [0, 255], before the crop:
    # a dim or over-exposed photo is brought to the training photos' exposure (``benchmarks/exposure.py``)
    exposure_target: float = 0.0
    exposure_gain_range: tuple[float, float] = EXPOSURE_GAIN_RANGE

    @property
    def schema_version(self) -> int:
        """The lowest manifest schema that can express this spec."""
        if self.exposure_target > 0:
            return 4
        return 2 if self.colour_constancy != "none" else 1

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``input`` object (``colour_constancy`` and the exposure fields only where used)."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if self.colour_constancy == "none":
            del d["colour_constancy"]
        if self.exposure_target <= 0:
            del d["exposure_target"], d["exposure_gain_range"]
        return d


@dataclass(frozen=True)
class EncoderInfo:
    """What the encoder is: its timm architecture name, size and embedding dimension."""

    arch: str
    embed_dim: int
    params: int | None = None
    flops: int | None = None
    pooling: str = "default"
    trained_by: str = ""
    # > 0: the encoder file's output ends with a bins^3 colour histogram of its input crop, computed inside the
    # graph (``dermedge.export.colour``); ``embed_dim`` includes it. Recorded so a head fitted on one kind of
    # embedding is refused on the other (the dimensions differ) and so tools can tell the two parts apart.
    colour_histogram_bins: int = 0
    # ((stage, channels), ...): after the final pooled features come these stages' globally average-pooled
    # outputs, in this order (``dermedge.training.encoders.WithStagePools``); ``embed_dim`` includes them.
    pooled_stages: tuple[tuple[int, int], ...] = ()
    # ((stage, 2 x channels), ...) (schema 3): the input is twice the network's size; the network, its pooled
    # stages and the colour histogram see its 2x2 average, and these stages of the same network also run on the
    # full input, their spatial mean and std following the pooled stages (``training.encoders.WithFineStages``).
    fine_stages: tuple[tuple[int, int], ...] = ()

    @property
    def pooled_stages_dim(self) -> int:
        """Dimensions of the embedding that are earlier stages' pooled outputs; 0 if none."""
        return sum(c for _, c in self.pooled_stages)

    @property
    def fine_stages_dim(self) -> int:
        """Dimensions of the embedding that are the full-size stages' means and stds; 0 if none."""
        return sum(c for _, c in self.fine_stages)

    @property
    def schema_version(self) -> int:
        """The lowest manifest schema that can express this encoder (3 with fine stages)."""
        return 3 if self.fine_stages else 1

    @property
    def final_dim(self) -> int:
        """The leading dimensions: the network's final pooled features (what the abstain detector looks at)."""
        return self.embed_dim - self.pooled_stages_dim - self.fine_stages_dim - self.colour_histogram_dim

    @property
    def colour_histogram_dim(self) -> int:
        """Dimensions of the embedding that are the colour histogram (the last ones); 0 if none."""
        return self.colour_histogram_bins**3 if self.colour_histogram_bins else 0

    def dims_note(self) -> str:
        """`` (320 network + 240 pooled stages 2, 1 + 512 colour histogram)`` for an embedding with appended
        parts, else ``""``."""
        parts = [f"{self.final_dim} network"]
        if self.pooled_stages:
            parts.append(f"{self.pooled_stages_dim} pooled stages {', '.join(str(s) for s, _ in self.pooled_stages)}")
        if self.fine_stages:
            parts.append(f"{self.fine_stages_dim} fine stages {', '.join(str(s) for s, _ in self.fine_stages)}")
        if self.colour_histogram_dim:
            parts.append(f"{self.colour_histogram_dim} colour histogram")
        return f" ({' + '.join(parts)})" if len(parts) > 1 else ""

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``encoder`` object (``colour_histogram_bins``, ``pooled_stages`` only where used)."""
        d = asdict(self)
        if not self.colour_histogram_bins:
            del d["colour_histogram_bins"]
        if self.pooled_stages:
            d["pooled_stages"] = [[int(s), int(c)] for s, c in self.pooled_stages]
        else:
            del d["pooled_stages"]
        if self.fine_stages:
            d["fine_stages"] = [[int(s), int(c)] for s, c in self.fine_stages]
        else:
            del d["fine_stages"]
        return d


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
    _check_member_name(path, f"manifest: {where}.path")
    sha = _require(obj, "sha256", str, where)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise BundleError(f"manifest: {where}.sha256 must be 64 lowercase hex digits, found {sha!r}")
    size = _require(obj, "bytes", int, where)
    if size < 0:
        raise BundleError(f"manifest: {where}.bytes must be >= 0, found {size}")
    return FileRef(path=path, sha256=sha, bytes=size)


def _parse_encoder(data: dict[str, Any], schema_version: int = SCHEMA_VERSION) -> EncoderInfo:
    enc = _require(data, "encoder", dict, "manifest")
    embed_dim = _require(enc, "embed_dim", int, "encoder")
    if embed_dim < 1:
        raise BundleError(f"manifest: encoder.embed_dim must be >= 1, found {embed_dim}")
    bins = _optional(enc, "colour_histogram_bins", int, "encoder", 0)
    if bins and not 2 <= bins <= 16:
        raise BundleError(f"manifest: encoder.colour_histogram_bins must be 0 or 2-16, found {bins}")
    if bins and embed_dim <= bins**3:
        raise BundleError(
            f"manifest: encoder.embed_dim {embed_dim} must exceed the colour histogram's {bins**3} dimensions "
            f"(encoder.colour_histogram_bins {bins})"
        )
    room = embed_dim - (bins**3 if bins else 0)
    fine = _parse_pooled_stages(enc, room, "fine_stages")
    if fine and any(c % 2 for _, c in fine):
        raise BundleError(f"manifest: encoder.fine_stages' widths are mean + std (even numbers), found {list(fine)}")
    if fine and schema_version < 3:
        raise BundleError(f"manifest: encoder.fine_stages needs schema_version 3, the manifest says {schema_version}")
    stages = _parse_pooled_stages(enc, room - sum(c for _, c in fine))
    return EncoderInfo(
        arch=_require(enc, "arch", str, "encoder"),
        embed_dim=embed_dim,
        params=_optional(enc, "params", int, "encoder", None),
        flops=_optional(enc, "flops", int, "encoder", None),
        pooling=_optional(enc, "pooling", str, "encoder", "default"),
        trained_by=_optional(enc, "trained_by", str, "encoder", ""),
        colour_histogram_bins=bins,
        pooled_stages=stages,
        fine_stages=fine,
    )


def _parse_pooled_stages(enc: dict[str, Any], room: int, key: str = "pooled_stages") -> tuple[tuple[int, int], ...]:
    """``encoder.pooled_stages`` (or ``fine_stages``): a list of distinct ``[stage, channels]`` pairs of
    non-negative ints, whose channels leave at least one final-feature dimension in ``room`` (the embedding less
    any histogram and fine stages)."""
    raw = _optional(enc, key, list, "encoder", [])
    ok = all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in p)
        for p in raw
    )
    if not ok or any(s < 0 or c < 1 for s, c in raw) or len({s for s, _ in raw}) != len(raw):
        raise BundleError(f"manifest: encoder.{key} must be a list of distinct [stage, channels] pairs, found {raw!r}")
    stages = tuple((s, c) for s, c in raw)
    if sum(c for _, c in stages) >= room:
        raise BundleError(
            f"manifest: encoder.{key}' {sum(c for _, c in stages)} dimensions leave no final features in "
            f"the {room}-d embedding (less any colour histogram and fine stages)"
        )
    return stages


def _parse_input(data: dict[str, Any], schema_version: int = SCHEMA_VERSION) -> InputSpec:
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
        colour_constancy=_choice(inp, "colour_constancy", "input", COLOUR_CONSTANCY, "none"),
        **_exposure(inp),
    )
    if spec.schema_version > schema_version:
        what = "exposure_target" if spec.exposure_target > 0 else "colour_constancy"
        v = spec.schema_version
        raise BundleError(f"manifest: input.{what} needs schema_version {v}, the manifest says {schema_version}")
    if spec.resize == "shorter_side" and spec.resize_size < max(spec.size):
        raise BundleError(f"manifest: input.resize_size {spec.resize_size} is smaller than the crop {spec.size}")
    return spec


def _exposure(inp: dict[str, Any]) -> dict[str, Any]:
    """``input.exposure_target`` in (0, 255] and ``exposure_gain_range`` [low <= 1 <= high], or {} without a target."""
    if inp.get("exposure_target") is None:
        if inp.get("exposure_gain_range") is not None:
            raise BundleError("manifest: input.exposure_gain_range is given without input.exposure_target")
        return {}
    target = _finite(inp["exposure_target"], "input.exposure_target")
    if not 0 < target <= 255:
        raise BundleError(f"manifest: input.exposure_target must be a pixel value in (0, 255], found {target}")
    lo, hi = _numbers(inp, "exposure_gain_range", "input", 2)
    if not 0 < lo <= 1 <= hi:
        raise BundleError(
            f"manifest: input.exposure_gain_range must be [low, high] with 0 < low <= 1 <= high, found {[lo, hi]}"
        )
    return {"exposure_target": target, "exposure_gain_range": (lo, hi)}


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
    if version not in SCHEMA_VERSIONS:
        raise BundleError(
            f"manifest: schema_version {version} is not supported by this dermedge "
            f"(it reads schema_version {', '.join(map(str, SCHEMA_VERSIONS))}); "
            "upgrade dermedge or re-export the bundle"
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
        encoder=_parse_encoder(data, version),
        input=_parse_input(data, version),
        artifacts=artifacts,
        head=_parse_head(data),
        provenance=dict(_optional(data, "provenance", dict, "manifest", {})),
        description=_optional(data, "description", str, "manifest", ""),
        raw=data,
    )


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
