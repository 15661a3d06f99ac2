"""Image decoding and preprocessing with OpenCV: pure functions, every number from the manifest.

``read_image`` turns a path, encoded bytes or an array into an HxWx3 uint8 RGB array. It sniffs the
header first, so that unknown formats get a clear error and images above ``max_pixels`` are refused
*before* any pixel is decoded (decompression bombs). Large JPEGs are decoded at 1/2, 1/4 or 1/8
scale in the DCT domain (``IMREAD_REDUCED_COLOR_*``) when the result stays at least as large as
the resize target, so a 12-MP phone photo is never fully decoded.

``prepare`` resizes, centre-crops and normalises one RGB array into a CHW float32 tensor.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dermedge._files import FileRefused, read_regular
from dermedge.bundle import InputSpec
from dermedge.errors import InputError

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera or dermatoscope we know of
MAX_FILE_BYTES = 256 << 20
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

_INTERPOLATION = {
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}
logger = logging.getLogger(__name__)

_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


@dataclass(frozen=True)
class ImageHeader:
    """Format and pixel dimensions read from an encoded image's header (nothing decoded)."""

    format: str
    width: int
    height: int


def describe(source: object, index: int = 0) -> str:
    """A short printable name for an input, used in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, np.ndarray):
        return f"<array #{index}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes #{index}>"
    return f"<{type(source).__name__} #{index}>"


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk JPEG markers to the first SOFn segment; return (width, height)."""
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return None
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if pos + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    endian = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(endian + "I", data[4:8])
        (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
        width = height = None
        for i in range(count):
            entry = data[offset + 2 + 12 * i : offset + 14 + 12 * i]
            tag, typ = struct.unpack(endian + "HH", entry[:4])
            value = struct.unpack(endian + ("H" if typ == 3 else "I"), entry[8:10] if typ == 3 else entry[8:12])[0]
            if tag == 256:
                width = value
            elif tag == 257:
                height = value
        if width is None or height is None:
            return None
        return int(width), int(height)
    except struct.error:
        return None


def sniff_header(data: bytes) -> ImageHeader | None:
    """Identify the image format and its dimensions from the first bytes; ``None`` if unknown.

    A recognised format whose dimensions cannot be read gets width = height = -1.
    """
    head = bytes(data[:64])
    fmt: str
    size: tuple[int, int] | None
    if head[:3] == b"\xff\xd8\xff":
        fmt, size = "jpeg", _jpeg_size(bytes(data[: 1 << 20]))
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        fmt = "png"
        size = struct.unpack(">II", head[16:24]) if len(head) >= 24 and head[12:16] == b"IHDR" else None
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        fmt, size = "gif", struct.unpack("<HH", head[6:10]) if len(head) >= 10 else None
    elif head[:2] == b"BM":
        fmt = "bmp"
        size = None
        if len(head) >= 26:
            w, h = struct.unpack("<ii", head[18:26])
            size = (abs(w), abs(h))
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        fmt = "webp"
        size = None
        chunk = head[12:16]
        if chunk == b"VP8X" and len(head) >= 30:
            size = (1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little"))
        elif chunk == b"VP8 " and len(head) >= 30:
            w, h = struct.unpack("<HH", head[26:30])
            size = (w & 0x3FFF, h & 0x3FFF)
        elif chunk == b"VP8L" and len(head) >= 25:
            bits = int.from_bytes(head[21:25], "little")
            size = (1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
    elif head[:4] in (b"II*\x00", b"MM\x00*"):
        fmt, size = "tiff", _tiff_size(bytes(data[: 1 << 20]))
    else:
        return None
    if size is None:
        return ImageHeader(fmt, -1, -1)
    return ImageHeader(fmt, int(size[0]), int(size[1]))


def _what_is_it(data: bytes) -> str:
    """Name common non-image payloads, for a more useful 'unsupported format' message."""
    head = bytes(data[:16]).lstrip()
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed data"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive"
    if head.lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "a HEIC/AVIF photo (export it as JPEG first)"
    try:
        bytes(data[:256]).decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "an unknown binary format"


def reduced_decode_factor(width: int, height: int, target_short_side: int) -> int:
    """Largest JPEG DCT scale (8, 4, 2 or 1) that keeps the shorter side >= ``target_short_side``."""
    short = min(width, height)
    for factor, _ in _REDUCED_FLAGS:
        if (short + factor - 1) // factor >= target_short_side:
            return factor
    return 1


def _to_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
    """Convert an OpenCV-decoded BGR(A)/gray image of any depth to HxWx3 uint8 RGB."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(np.nan_to_num(image) * 255.0, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(name, f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return over_white(image[:, :, 2::-1], image[:, :, 3:4])  # decoded as BGRA
    raise InputError(name, f"unsupported channel count {channels}")


def decode_image(
    data: bytes,
    name: str,
    *,
    target_short_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode encoded image bytes into HxWx3 uint8 RGB.

    Args:
        data: the encoded file content.
        name: printable input name for errors.
        target_short_side: the resize target; large JPEGs are decoded at reduced scale down to it.
        max_pixels: images whose header declares more pixels are refused before decoding.

    Returns:
        The RGB image. JPEG EXIF orientation is applied.

    Raises:
        InputError: empty, unknown or unsupported format, too many pixels, or corrupt data.
    """
    if len(data) == 0:
        raise InputError(name, "file is empty (0 bytes)")
    header = sniff_header(data)
    if header is None:
        raise InputError(name, f"unsupported format: the content is {_what_is_it(data)}, not an image")
    if header.width == 0 or header.height == 0:
        raise InputError(name, f"{header.format} header declares an empty image ({header.width}x{header.height})")
    if header.width > 0 and header.width * header.height > max_pixels:
        raise InputError(
            name,
            f"{header.format} image is {header.width}x{header.height} = {header.width * header.height:,} pixels, "
            f"above the limit of {max_pixels:,} (refused before decoding; raise max_pixels if this is genuine)",
        )
    if header.width < 0 and header.format == "jpeg":
        raise InputError(name, "truncated or corrupt JPEG: no frame header (SOF) found")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if header.format == "jpeg":
        flag = cv2.IMREAD_COLOR
        if target_short_side:
            factor = reduced_decode_factor(header.width, header.height, target_short_side)
            flag = dict(_REDUCED_FLAGS).get(factor, cv2.IMREAD_COLOR)
        image = cv2.imdecode(buffer, flag)
    else:
        # IMREAD_UNCHANGED keeps alpha and 16-bit depth so they are converted properly below.
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputError(name, f"corrupt or truncated {header.format} data: OpenCV could not decode it")
    return _to_rgb_uint8(image, name)


def check_array(image: np.ndarray, name: str) -> np.ndarray:
    """Validate a caller-supplied array and return it as contiguous HxWx3 uint8 RGB.

    Accepts HxW (gray), HxWx1, HxWx3 (RGB) and HxWx4 (RGBA) uint8 arrays.

    Raises:
        InputError: wrong dtype or shape, with the fix in the message.
    """
    if image.dtype != np.uint8:
        hint = ""
        if np.issubdtype(image.dtype, np.floating):
            hint = "; for floats in [0, 1] pass (np.clip(x, 0, 1) * 255).astype(np.uint8)"
        raise InputError(name, f"expected a uint8 array, found dtype {image.dtype}{hint}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(name, f"expected an HxWx3 RGB array, found shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(name, f"array has an empty dimension: shape {image.shape}")
    if image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return over_white(image[:, :, :3], image[:, :, 3:4])
    return np.ascontiguousarray(image)


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite a uint8 RGB image with its (H, W, 1) uint8 alpha over white, the usual background of cut-out
    photos; the one implementation for decoded files and for arrays (the app pipeline graph does the same)."""
    a = alpha.astype(np.float32) / 255.0
    out: np.ndarray = (rgb.astype(np.float32) * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)
    return out


def shades_of_gray(rgb: np.ndarray, p: float = 6.0) -> np.ndarray:
    """Shades-of-Gray colour constancy (Finlayson & Trezzi, 2004) on an HxWx3 uint8 RGB image.

    The illuminant is estimated per channel as the Minkowski p-mean of its pixels (p=1: grey world,
    p=inf: max-RGB; p=6 is the usual choice for dermoscopy); each channel is scaled by mean(e)/e_c so
    the estimated illuminant becomes grey while overall brightness is kept, then clipped to [0, 255].
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"shades_of_gray needs an HxWx3 image, got shape {rgb.shape}")
    out: np.ndarray = (shades_of_gray_float(rgb.astype(np.float32), p) + 0.5).astype(np.uint8)
    return out


def shades_of_gray_float(pixels: np.ndarray, p: float = 6.0) -> np.ndarray:
    """:func:`shades_of_gray` on HxWx3 float32 pixels in [0, 255], without rounding (what ``prepare`` and
    the pipeline graph compute for ``input.colour_constancy = "shades_of_gray"``)."""
    # scaled to [0, 1] first so x**6 stays far from float32 overflow
    e = np.power(np.mean(np.power(pixels.reshape(-1, 3) / np.float32(255.0), np.float32(p)), axis=0), 1.0 / p)
    gain = (e.mean() / np.maximum(e, np.float32(1e-6))).astype(np.float32)
    out: np.ndarray = np.clip(pixels * gain, 0.0, 255.0).astype(np.float32)
    return out


def exposure_gain_float(pixels: np.ndarray, target: float, gain_range: tuple[float, float]) -> np.ndarray:
    """HxWx3 float32 pixels in [0, 255] scaled by one gain, ``target / mean pixel value`` bounded to ``gain_range``,
    and clipped to [0, 255] (what ``prepare`` and the pipeline graph compute for ``input.exposure_target``).

    One gain for all three channels keeps the colour ratios, which carry the diagnosis; the bound keeps a
    near-black photo from being amplified into noise."""
    lo, hi = np.float32(gain_range[0]), np.float32(gain_range[1])
    level = np.maximum(pixels.mean(dtype=np.float32), np.float32(1e-6))
    gain = np.clip(np.float32(target) / level, lo, hi)
    out: np.ndarray = np.clip(pixels * gain, 0.0, 255.0).astype(np.float32)
    return out


def read_file(path: str | os.PathLike[str], name: str | None = None, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a file's bytes with errors that say what went wrong.

    Only regular files are read (after following links): pipes, devices and sockets are refused before
    anything is opened for reading, and the read stops at ``max_bytes`` even when the file system
    reports a smaller size (``/proc`` files report 0).

    Raises:
        InputError: missing path, a directory, a broken link, not a regular file, unreadable or too large.
    """
    try:
        return read_regular(path, max_bytes)
    except FileRefused as exc:
        raise InputError(name or os.fspath(path), exc.reason) from None


def read_image(
    source: ImageInput,
    *,
    target_short_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    index: int = 0,
) -> np.ndarray:
    """Turn a path, encoded bytes or an array into an HxWx3 uint8 RGB array.

    Args:
        source: file path, encoded bytes, or an HxWx3 uint8 RGB array.
        target_short_side: resize target (lets large JPEGs decode at reduced scale).
        max_pixels: refuse images with more pixels than this, before decoding.
        index: position in the caller's batch, used to name unnamed inputs in errors.

    Returns:
        HxWx3 uint8 RGB array.

    Raises:
        InputError: the input cannot be used; the message names it and says why.

    Example:
        >>> rgb = read_image("lesion.jpg", target_short_side=256)
    """
    name = describe(source, index)
    if isinstance(source, np.ndarray):
        return check_array(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), name, target_short_side=target_short_side, max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        data = read_file(source, name)
        return decode_image(data, name, target_short_side=target_short_side, max_pixels=max_pixels)
    raise InputError(name, f"expected a path, bytes or a numpy array, found {type(source).__name__}")


def prepare(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize, centre-crop and normalise one HxWx3 uint8 RGB image into a 3xHxW float32 tensor.

    With ``spec.colour_constancy == "shades_of_gray"`` the resized image is colour-corrected before the crop; with
    ``spec.exposure_target > 0`` it is then brought to that mean pixel value (:func:`exposure_gain_float`).

    ``shorter_side``: scale so the shorter side equals ``spec.resize_size`` (aspect kept);
    ``squash``: scale both sides to ``resize_size``. Then crop ``spec.size`` from the centre.
    """
    h, w = image.shape[:2]
    out_h, out_w = spec.size
    if spec.resize == "squash":
        new_w = new_h = spec.resize_size
    else:
        scale = spec.resize_size / min(h, w)
        new_w, new_h = max(out_w, round(w * scale)), max(out_h, round(h * scale))
    interp = _INTERPOLATION[spec.interpolation]
    pixels: np.ndarray = image.astype(np.float32)
    if (new_w, new_h) != (w, h):
        # Resized in float32 and not rounded back to uint8: OpenCV's fixed-point uint8 path differs
        # from every other runtime's bilinear by one level on ~10 % of pixels, the float path agrees
        # with ONNX Resize (the pipeline graph, the browser page, the C++ app) to ~1e-5.
        pixels = cv2.resize(pixels, (new_w, new_h), interpolation=interp)
    if spec.colour_constancy == "shades_of_gray":
        pixels = shades_of_gray_float(pixels)
    if spec.exposure_target > 0:
        pixels = exposure_gain_float(pixels, spec.exposure_target, spec.exposure_gain_range)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    crop = pixels[top : top + out_h, left : left + out_w]
    if spec.channel_order == "BGR":
        crop = crop[:, :, ::-1]
    mean = np.asarray(spec.mean, dtype=np.float32) * np.float32(255.0)
    inv_std = np.float32(1.0) / (np.asarray(spec.std, dtype=np.float32) * np.float32(255.0))
    tensor = (crop - mean) * inv_std
    return np.ascontiguousarray(tensor.transpose(2, 0, 1))


def load_and_prepare(
    source: ImageInput, spec: InputSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS, index: int = 0
) -> np.ndarray:
    """``read_image`` followed by ``prepare``, with reduced JPEG decoding sized for ``spec``.

    An image smaller than the model's input is still used (upscaled), with a warning naming it: a thumbnail
    carries less detail than the photos the model was trained on, so its result is less reliable.
    """
    image = read_image(source, target_short_side=spec.resize_size, max_pixels=max_pixels, index=index)
    h, w = image.shape[:2]
    if min(h, w) < min(spec.size):
        logger.warning(
            "%s: %dx%d px is smaller than the model's %d-px input; upscaled, so its result is less reliable",
            describe(source, index),
            w,
            h,
            min(spec.size),
        )
    return prepare(image, spec)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True if the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
