"""Exception hierarchy: every error dermedge raises derives from :class:`DermedgeError`."""

from __future__ import annotations


class DermedgeError(Exception):
    """Root of every exception raised by dermedge, so callers can catch them all at once."""


class BundleError(DermedgeError):
    """A model bundle is missing, malformed, has the wrong schema, or fails a checksum or signature."""


class BackendUnavailableError(DermedgeError):
    """The requested backend's package or device is not present on this machine."""


class BackendError(DermedgeError):
    """The backend failed while loading or running a model (the vendor exception is chained)."""


class InputError(DermedgeError):
    """An input image could not be read or has an unusable shape or dtype.

    Attributes:
        source: a printable name of the offending input (path, ``<bytes #3>``, ``<array #0>``).
        reason: why it was rejected, without the source name.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class BatchInputError(InputError):
    """Several inputs of one call failed; ``failures`` lists each ``InputError``.

    Raised by ``Model.embed``/``Model.classify`` after every input has been tried, so the message
    lists all bad inputs at once rather than the first one only.
    """

    def __init__(self, failures: list[InputError], total: int) -> None:
        lines = "\n".join(f"  - {f}" for f in failures)
        DermedgeError.__init__(self, f"{len(failures)} of {total} inputs could not be used:\n{lines}")
        self.failures = failures
        self.source = ", ".join(f.source for f in failures)
        self.reason = f"{len(failures)} inputs failed"


class ExportError(DermedgeError):
    """Exporting a model (ONNX, OpenVINO IR, TensorRT engine) failed."""


class QuantizationError(ExportError):
    """INT8 quantisation or its accuracy gate failed."""


class MissingExtraError(DermedgeError, ImportError):
    """A part of dermedge needs packages from an extra that is not installed (``pip install 'dermedge[train]'``).

    An ``ImportError`` too, so ``except ImportError`` around an optional import keeps working.
    """


def require_extra(part: str, extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` when any of ``modules`` is not installed.

    Uses ``importlib.util.find_spec``, so nothing is imported (importing torch takes seconds).

    Args:
        part: the dermedge package that needs them, e.g. ``dermedge.training``.
        extra: the pip extra that installs them, e.g. ``train``.
        modules: top-level module names to look for.

    Raises:
        MissingExtraError: with the missing modules and the ``pip install`` line.
    """
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        err = MissingExtraError(
            f"{part} needs {', '.join(missing)}, which this Python does not have: pip install 'dermedge[{extra}]'"
        )
        err.name = missing[0]
        raise err
