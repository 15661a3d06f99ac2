"""Coverage-guided fuzzing of image decoding/preprocessing and manifest parsing with atheris.

Not part of the test suite (the bounded hypothesis tests in tests/dermedge/test_fuzz.py are). For long runs:

    pip install atheris
    python tests/fuzz/atheris_harness.py decode -max_total_time=3600 corpus_decode/
    python tests/fuzz/atheris_harness.py manifest -max_total_time=3600 corpus_manifest/

Seed the decode corpus with a few small JPEG/PNG/WebP/TIFF files. Any exception other than
InputError / BundleError (or a crash) is a bug: atheris stops and writes the input as crash-*.
"""

import json
import sys

import atheris

with atheris.instrument_imports():
    from dermedge.bundle import InputSpec, parse_manifest
    from dermedge.errors import BundleError, InputError
    from dermedge.preprocess import load_and_prepare

SPEC = InputSpec(size=(32, 32), resize_size=36)


def fuzz_decode(data: bytes) -> None:
    try:
        load_and_prepare(data, SPEC, max_pixels=4_000_000)
    except InputError:
        pass


def fuzz_manifest(data: bytes) -> None:
    try:
        obj = json.loads(data.decode("utf-8", errors="replace"))
    except (json.JSONDecodeError, RecursionError):
        return
    try:
        parse_manifest(obj)
    except BundleError:
        pass


if __name__ == "__main__":
    target = {"decode": fuzz_decode, "manifest": fuzz_manifest}[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
