"""``Model``: glue between a bundle, preprocessing, a backend and a head."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dermedge.backends.base import Backend
from dermedge.bundle import Artifact, Bundle, Manifest
from dermedge.errors import BatchInputError, DermedgeError, InputError
from dermedge.heads import LinearHead, fit_abstain, fit_linear_head
from dermedge.preprocess import DEFAULT_MAX_PIXELS, ImageInput, describe, load_and_prepare
from dermedge.results import Prediction as Prediction
from dermedge.results import Result as Result

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16


class _SharedRuntime:
    """The opened bundle and backend of a model, shared with the models ``fit_head`` derives from it.

    Reference-counted: each model holding it releases it once on ``close()``, and the backend and a
    zipped bundle's temporary folder go away when the last one does, whichever closes first.
    """

    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend
        self._refs = 1
        self._lock = threading.Lock()

    def acquire(self) -> _SharedRuntime:
        with self._lock:
            if self._refs == 0:
                raise DermedgeError("this model is closed; load it again to derive a new one")
            self._refs += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            self.backend.close()
            self.bundle.close()


@dataclass
class _Prepared:
    index: int
    source: str
    tensor: np.ndarray | None = None
    error: InputError | None = None


class Model:
    """A loaded dermatology encoder (and optional head) ready to embed and classify images.

    Create it with :func:`load_model`. Methods may be called from several threads at once.
    Use it as a context manager, or call :meth:`close`, to release the runtime.
    """

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        artifact: Artifact,
        head: LinearHead | None,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        selection_reason: str = "",
        head_fitted_here: bool = False,
        _shared: _SharedRuntime | None = None,
    ) -> None:
        self._runtime = _shared.acquire() if _shared is not None else _SharedRuntime(bundle, backend)
        self._bundle = bundle
        self._backend = backend
        self._closed = False
        self.artifact = artifact
        self.head = head
        self.max_pixels = max_pixels
        self.selection_reason = selection_reason
        self._head_fitted_here = head_fitted_here

    # -- facts -------------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        """The bundle's parsed manifest."""
        return self._bundle.manifest

    @property
    def backend_name(self) -> str:
        """Registry name of the backend in use."""
        return self.artifact.backend

    @property
    def precision(self) -> str:
        """The artifact's precision (``fp32``, ``fp16``, ``bf16``, ``int8``)."""
        return self.artifact.precision

    @property
    def inference_precision(self) -> str:
        """What the runtime actually computes in, as it reports it (OpenVINO: ``f32``/``bf16``...)."""
        return str(self._backend.describe().get("inference_precision", self.artifact.precision))

    @property
    def embed_dim(self) -> int:
        return self.manifest.encoder.embed_dim

    @property
    def labels(self) -> tuple[str, ...]:
        """The head's labels (empty if the bundle has no head)."""
        return self.head.labels if self.head else ()

    @property
    def model_id(self) -> str:
        """Identifies the exact encoder output (bundle, backend and precision) for embedding stores."""
        return f"{self.manifest.model_id}:{self.backend_name}:{self.precision}"

    def info(self) -> dict[str, Any]:
        """Everything ``dermedge info`` prints: bundle, encoder, backend, head and provenance."""
        m = self.manifest
        return {
            "bundle": str(self._bundle.source),
            "name": m.name,
            "version": m.version,
            "created": m.created,
            "description": m.description,
            "model_id": self.model_id,
            "encoder": m.encoder.to_manifest(),
            "input": asdict(m.input),
            "backend": {**self._backend.describe(), "selected_because": self.selection_reason},
            "precision": self.precision,
            "inference_precision": self.inference_precision,
            "artifacts": [
                {
                    "backend": a.backend,
                    "precision": a.precision,
                    "format": a.format,
                    "path": a.file.path,
                    "bytes": sum(f.bytes for f in a.files),
                    "gate": a.gate,
                }
                for a in m.artifacts
            ],
            "head": None
            if self.head is None
            else {
                "type": self.head.type,
                "labels": list(self.head.labels),
                "temperature": self.head.temperature,
                "metrics": self.head.metrics,
                "abstain": None
                if self.head.ood_threshold is None
                else f"Mahalanobis distance > {self.head.ood_threshold:.2f} means unlike the training photos",
            },
            "provenance": m.provenance,
        }

    # -- inference ---------------------------------------------------------------------------
    def _prepare_one(self, index: int, source: ImageInput) -> _Prepared:
        name = describe(source, index)
        try:
            tensor = load_and_prepare(source, self.manifest.input, max_pixels=self.max_pixels, index=index)
            return _Prepared(index, name, tensor=tensor)
        except InputError as exc:
            return _Prepared(index, name, error=exc)
        except (MemoryError, cv2.error) as exc:
            return _Prepared(index, name, error=InputError(name, f"could not be processed: {exc}"))

    def _embed_tensors(self, tensors: list[np.ndarray]) -> np.ndarray:
        return self._run_encoder(np.stack(tensors).astype(np.float32, copy=False))

    def _run_encoder(self, batch: np.ndarray) -> np.ndarray:
        out = self._backend.run(batch)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise DermedgeError(f"encoder returned shape {out.shape} for a batch of {len(batch)}")
        return out

    def embed_tensor(self, batch: np.ndarray) -> np.ndarray:
        """The encoder alone, on input already prepared as :func:`dermedge.preprocess.prepare` makes it.

        For apps that decode and preprocess themselves, and for timing the encoder (``dermedge bench``).

        Args:
            batch: (N, 3, H, W) float32 at the bundle's input size, normalised as the manifest says.

        Returns:
            (N, D) float32 embeddings.

        Raises:
            InputError: a batch of the wrong shape or dtype.
        """
        self._check_open()
        h, w = self.manifest.input.size
        if batch.ndim != 4 or batch.shape[1:] != (3, h, w) or batch.dtype != np.float32:
            raise InputError("<tensor>", f"expected (N, 3, {h}, {w}) float32, found {batch.shape} {batch.dtype}")
        return self._run_encoder(np.ascontiguousarray(batch))

    def iter_results(
        self,
        images: Iterable[ImageInput],
        *,
        classify: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        top_k: int = 3,
        workers: int | None = None,
    ) -> Iterator[Result]:
        """Embed (and optionally classify) images lazily, yielding one :class:`Result` per input, in order.

        Bad inputs yield a ``Result`` with ``error`` set; the rest of the batch carries on. Images
        of the next batch are decoded on worker threads while the current batch runs.

        Args:
            images: paths, encoded bytes or HxWx3 uint8 RGB arrays (any iterable, consumed lazily).
            classify: also run the head (requires one).
            batch_size: images per backend call.
            top_k: labels kept in ``Prediction.top_k``.
            workers: decode threads (default: up to 4, by CPU count).
        """
        self._check_open()
        if classify and self.head is None:
            raise DermedgeError(
                f"bundle {self.manifest.name!r} has no classification head; fit one with Model.fit_head "
                "or `dermedge fit-head`, or use embed()"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n_workers = workers or max(1, min(4, os.cpu_count() or 1))

        def batches() -> Iterator[list[tuple[int, ImageInput]]]:
            chunk: list[tuple[int, ImageInput]] = []
            for i, img in enumerate(images):
                chunk.append((i, img))
                if len(chunk) == batch_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="dermedge-decode") as pool:
            pending: list[Future[_Prepared]] | None = None
            for chunk in batches():
                submitted = [pool.submit(self._prepare_one, i, img) for i, img in chunk]
                if pending is not None:
                    yield from self._finish(pending, classify, top_k)
                pending = submitted
            if pending is not None:
                yield from self._finish(pending, classify, top_k)

    def _finish(self, futures: list[Future[_Prepared]], classify: bool, top_k: int) -> Iterator[Result]:
        prepared = [f.result() for f in futures]
        good = [p for p in prepared if p.tensor is not None]
        embeddings = self._embed_tensors([p.tensor for p in good]) if good else np.zeros((0, self.embed_dim))  # type: ignore[misc]
        preds = self._predict(embeddings, top_k) if classify and good else []
        row = {p.index: j for j, p in enumerate(good)}
        for p in prepared:
            if p.error is not None:
                yield Result(p.index, p.source, error=p.error)
            else:
                j = row[p.index]
                yield Result(p.index, p.source, embedding=embeddings[j], prediction=preds[j] if preds else None)

    def _predict(self, embeddings: np.ndarray, top_k: int) -> list[Prediction]:
        assert self.head is not None
        probs = self.head.probabilities(embeddings)
        ood = self.head.ood_scores(embeddings)
        threshold = self.head.ood_threshold
        labels = self.head.labels
        k = max(1, min(top_k, len(labels)))
        out = []
        for i, row in enumerate(probs):
            order = np.argsort(-row)
            out.append(
                Prediction(
                    label=labels[order[0]],
                    score=float(row[order[0]]),
                    scores={lab: float(p) for lab, p in zip(labels, row)},
                    top_k=tuple((labels[j], float(row[j])) for j in order[:k]),
                    abstain=bool(ood is not None and threshold is not None and ood[i] > threshold),
                    ood_score=None if ood is None else float(ood[i]),
                )
            )
        return out

    @staticmethod
    def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
        if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)):
            return [images]
        if isinstance(images, np.ndarray):
            if images.ndim == 4:
                return list(images)
            return [images]
        return list(images)

    def _run_all(
        self, images: ImageInput | Sequence[ImageInput], classify: bool, top_k: int, batch_size: int
    ) -> list[Result]:
        items = self._as_list(images)
        results = list(self.iter_results(items, classify=classify, top_k=top_k, batch_size=batch_size))
        failures = [r.error for r in results if r.error is not None]
        if failures:
            if len(items) == 1:
                raise failures[0]
            raise BatchInputError(failures, len(items))
        return results

    def embed(self, images: ImageInput | Sequence[ImageInput], *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Embed images with the encoder.

        Args:
            images: one or many paths, encoded bytes or HxWx3 uint8 RGB arrays (an (N, H, W, 3)
                array counts as N images).
            batch_size: images per backend call.

        Returns:
            (N, D) float32 embeddings, in input order.

        Raises:
            InputError: an input could not be used (``BatchInputError`` lists every bad input of a
                batch after trying them all). Use :meth:`iter_results` to keep the good ones.

        Example:
            >>> emb = model.embed(["a.jpg", "b.jpg"])  # (2, D)
        """
        results = self._run_all(images, False, 1, batch_size)
        if not results:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.stack([r.embedding for r in results]).astype(np.float32)  # type: ignore[misc]

    def classify(
        self, images: ImageInput | Sequence[ImageInput], top_k: int = 3, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[Prediction]:
        """Classify images with the bundle's head.

        Args:
            images: as for :meth:`embed`.
            top_k: how many ``(label, probability)`` pairs each ``Prediction.top_k`` holds.
            batch_size: images per backend call.

        Returns:
            One :class:`Prediction` per input, in order.

        Raises:
            InputError: as for :meth:`embed`.
            DermedgeError: the bundle has no head.

        Example:
            >>> model.classify("lesion.jpg")[0].label
            'NEV'
        """
        return [r.prediction for r in self._run_all(images, True, top_k, batch_size)]  # type: ignore[misc]

    def classify_embeddings(self, embeddings: np.ndarray, top_k: int = 3) -> list[Prediction]:
        """Apply the head to precomputed (N, D) embeddings."""
        if self.head is None:
            raise DermedgeError(f"bundle {self.manifest.name!r} has no classification head")
        return self._predict(np.asarray(embeddings, dtype=np.float32), top_k)

    # -- heads and saving --------------------------------------------------------------------
    def fit_head(
        self,
        images_or_embeddings: Sequence[ImageInput] | np.ndarray,
        labels: Sequence[str],
        *,
        groups: Sequence[Any] | None = None,
        l2: float | None = None,
        folds: int = 5,
        calibrate: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Model:
        """Fit a class-balanced logistic-regression head on your own labelled images, offline.

        Args:
            images_or_embeddings: images (paths/bytes/arrays) or an (N, D) float embedding array.
            labels: one class name per item.
            groups: optional patient or lesion ids, so cross-validation never splits a group.
            l2: L2 strength; ``None`` chooses it by cross-validation.
            folds: cross-validation folds.
            calibrate: fit a softmax temperature on out-of-fold predictions.
            batch_size: images per backend call when embedding.

        Returns:
            A new ``Model`` sharing this one's encoder, with the new head; its
            ``head.metrics["cv"]`` holds cross-validated macro-F1, balanced accuracy, AUROC, ECE.
            The two models share the loaded encoder by reference count: either may be closed first,
            and the other keeps working. Close both (or use both as context managers).

        Raises:
            InputError: an image could not be used (nothing is fitted).
            DermedgeError: too few classes or examples.
        """
        self._check_open()
        data = images_or_embeddings
        if isinstance(data, np.ndarray) and data.ndim == 2 and np.issubdtype(data.dtype, np.floating):
            embeddings = data.astype(np.float32)
            if embeddings.shape[1] != self.embed_dim:  # from another model or version: cannot train this head
                raise DermedgeError(
                    f"fit_head: the embeddings are {embeddings.shape[1]}-d but {self.manifest.name} makes "
                    f"{self.embed_dim}-d ones{self.manifest.encoder.dims_note()}; embed the photos with this model"
                )
        else:
            embeddings = self.embed(list(data), batch_size=batch_size)
        head = fit_linear_head(embeddings, labels, groups=groups, l2=l2, folds=folds, calibrate=calibrate)
        network_dims = self.manifest.encoder.final_dim  # the detector's input: the final pooled features
        if len(embeddings) > network_dims:  # enough photos for a covariance estimate
            head = fit_abstain(head, embeddings, keep=0.975, dims=network_dims)
        return Model(
            self._bundle,
            self._backend,
            self.artifact,
            head,
            max_pixels=self.max_pixels,
            selection_reason=self.selection_reason,
            head_fitted_here=True,
            _shared=self._runtime,
        )

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        version: str | None = None,
        provenance: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write this model (every artifact of the source bundle plus the current head) as a new bundle.

        ``path`` ending in ``.dermedge`` writes a zip. Returns the path written.
        """
        from dermedge.bundle_writer import ArtifactSource, write_bundle

        m = self.manifest
        sources = [
            ArtifactSource(
                backend=a.backend,
                precision=a.precision,
                format=a.format,
                path=self._bundle.verify_file(a.file),
                companions=tuple(self._bundle.verify_file(c) for c in a.companions),
                dest=a.file.path,
                options=a.options,
                gate=a.gate,
            )
            for a in m.artifacts
        ]
        prov = dict(m.provenance)
        prov.update(provenance or {})
        if self.head is not None and self._head_fitted_here:
            prov["head_fitted"] = {
                "metrics": self.head.metrics.get("cv", {}),
                "n_samples": self.head.metrics.get("n_samples"),
            }
        return write_bundle(
            path,
            name=name or m.name,
            version=version or m.version,
            encoder=m.encoder,
            input_spec=m.input,
            artifacts=sources,
            head=self.head,
            provenance=prov,
            description=m.description,
            overwrite=overwrite,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise DermedgeError(f"model {self.manifest.name!r} is closed; load it again with dermedge.load_model")

    def close(self) -> None:
        """Release this model's hold on the backend and a zipped bundle's temporary files (freed when the
        last model sharing them closes). Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._runtime.release()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Model({self.manifest.name!r} {self.manifest.version}, {self.manifest.encoder.arch}, "
            f"backend={self.backend_name}/{self.precision}, labels={len(self.labels)})"
        )
