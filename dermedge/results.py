"""What inference returns: :class:`Prediction` (the head's answer) and :class:`Result` (one input's outcome)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dermedge.errors import InputError


@dataclass(frozen=True)
class Prediction:
    """The head's answer for one image.

    Attributes:
        label: the most probable label.
        score: its probability.
        scores: every label's probability.
        top_k: the ``top_k`` most probable ``(label, probability)`` pairs, best first.
        abstain: True when the photo does not look like the photos the head was fitted on (its
            ``ood_score`` is above the bundle's threshold); treat the label as unreliable.
            ``False`` when the bundle has no abstain detector.
        ood_score: distance to the training photos (``None`` without a detector).
    """

    label: str
    score: float
    scores: dict[str, float]
    top_k: tuple[tuple[str, float], ...] = ()
    abstain: bool = False
    ood_score: float | None = None


@dataclass(frozen=True)
class Result:
    """One input's outcome in :meth:`Model.iter_results`: an embedding (and prediction) or an error."""

    index: int
    source: str
    embedding: np.ndarray | None = None
    prediction: Prediction | None = None
    error: InputError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
