"""Model bundles: a directory (or the same content zipped as ``NAME.dermedge``) with a ``manifest.json``.

The manifest is parsed into frozen dataclasses. Every file the runtime uses is checked against its
sha256 before use. Nothing in a bundle is ever unpickled or executed: weights are ONNX/OpenVINO IR
files opened by their runtime, and heads are ``.npz`` arrays read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from dermedge._files import FileRefused, check_regular, read_regular, sha256_regular
from dermedge._onnx_refs import MalformedOnnx, external_data_locations
from dermedge.errors import BundleError
from dermedge.manifest import BUNDLE_SUFFIX as BUNDLE_SUFFIX
from dermedge.manifest import INTERPOLATIONS as INTERPOLATIONS
from dermedge.manifest import MANIFEST_NAME as MANIFEST_NAME
from dermedge.manifest import MAX_MANIFEST_BYTES as MAX_MANIFEST_BYTES
from dermedge.manifest import PRECISIONS as PRECISIONS
from dermedge.manifest import RESIZE_POLICIES as RESIZE_POLICIES
from dermedge.manifest import SCHEMA_VERSION as SCHEMA_VERSION
from dermedge.manifest import SIGNATURE_NAME as SIGNATURE_NAME
from dermedge.manifest import Artifact as Artifact
from dermedge.manifest import EncoderInfo as EncoderInfo
from dermedge.manifest import FileRef as FileRef
from dermedge.manifest import HeadInfo as HeadInfo
from dermedge.manifest import InputSpec as InputSpec
from dermedge.manifest import Manifest as Manifest
from dermedge.manifest import _check_member_name
from dermedge.manifest import default_resize as default_resize
from dermedge.manifest import parse_manifest as parse_manifest


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a regular file, read in 1 MiB chunks.

    Raises:
        FileRefused: not a regular file (a FIFO or device would block or never end) or unreadable.
    """
    return sha256_regular(path)


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
