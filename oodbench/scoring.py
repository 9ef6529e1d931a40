"""Scorer API: cached features, the classifier head, the scorer base class and its registry.

Convention everywhere: a score is a float64 per sample and HIGHER means MORE in-distribution.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.registry import Registry, origin, signature_params

__all__ = [
    "Features",
    "Head",
    "Scorer",
    "ScorerFailed",
    "create_scorer",
    "fit_and_score",
    "get_scorer",
    "list_scorers",
    "load_builtin_scorers",
    "register_scorer",
    "to_scores",
]

S = TypeVar("S", bound="Scorer")
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Head:
    """The linear classifier head: ``logits = features @ weight.T + bias``."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(
                f"Head needs weight K x D and bias K; got {tuple(self.weight.shape)} "
                f"and {tuple(self.bias.shape)}"
            )

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the head to N x D features, giving N x K logits."""
        return F.linear(features, self.weight, self.bias)


@dataclass(frozen=True, eq=False)
class Features:
    """One cached forward pass over a dataset.

    ``features`` are the N x D pooled penultimate (post-ReLU) features, ``logits`` the N x K
    head outputs and ``labels`` the N class indices (-1 where unknown).
    """

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        n = self.features.shape[0] if self.features.ndim == 2 else -1
        if n < 0 or self.logits.ndim != 2 or self.logits.shape[0] != n:
            raise ValueError(
                f"Features needs features N x D and logits N x K; got "
                f"{tuple(self.features.shape)} and {tuple(self.logits.shape)}"
            )
        if self.labels.shape != (n,):
            raise ValueError(f"Features needs {n} labels; got shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.features.shape[0]


def to_scores(values: torch.Tensor) -> np.ndarray:
    """Convert a score tensor to the float64 numpy array that ``Scorer.score`` returns."""
    return values.detach().to(device="cpu", dtype=torch.float64).numpy()


class Scorer(ABC):
    """Base class of post-hoc OOD scorers, sklearn-like.

    Subclasses take their hyper-parameters as keyword arguments with defaults, store each
    under the same attribute name, fit on ID-train features and score higher = more ID.
    """

    name: ClassVar[str]
    head_: Head | None = None

    def get_params(self) -> dict[str, Any]:
        """Return the constructor parameters and their current values."""
        return {p: getattr(self, p) for p in _param_names(type(self))}

    def fit(self, train: Features, head: Head) -> Self:
        """Fit on ID-train features, labels and the classifier head; the default stores the head."""
        self.head_ = head
        return self

    @abstractmethod
    def score(self, data: Features) -> np.ndarray:
        """Return float64 scores of shape (N,), higher = more in-distribution."""

    def _fitted(self, value: T | None) -> T:
        """Return a fitted attribute, raising if ``fit`` has not run."""
        if value is None:
            raise RuntimeError(f"scorer {_label(self)!r} is not fitted; call fit() first")
        return value

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def load_builtin_scorers() -> None:
    """Import the ``scorers`` package, which registers every module in it. Idempotent."""
    importlib.import_module("scorers")


SCORERS: Registry[type[Scorer]] = Registry("scorer", loader=load_builtin_scorers)
list_scorers = SCORERS.names
get_scorer = SCORERS.get


def _param_names(cls: type[Scorer]) -> list[str]:
    return [p.name for p in signature_params(cls)]


def _label(scorer: Scorer) -> str:
    return getattr(scorer, "name", type(scorer).__name__)


def register_scorer(name: str) -> Callable[[type[S]], type[S]]:
    """Class decorator registering a Scorer subclass under ``name`` and setting ``cls.name``."""

    def decorate(cls: type[S]) -> type[S]:
        if not (isinstance(cls, type) and issubclass(cls, Scorer)):
            raise TypeError(f"@register_scorer({name!r}) needs a Scorer subclass, got {cls!r}")
        for p in signature_params(cls):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
                raise TypeError(
                    f"scorer {name!r} ({origin(cls)}): constructor parameter {p.name!r} must be "
                    "a named keyword argument with a default"
                )
        return SCORERS.register(name)(cls)

    return decorate


def create_scorer(name: str, **params: Any) -> Scorer:
    """Instantiate the scorer ``name`` with keyword parameters (defaults for the rest)."""
    return SCORERS.create(name, **params)


class ScorerFailed(RuntimeError):
    """A scorer raised or returned unusable scores; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_scores(label: str, set_name: str, scores: np.ndarray, n: int) -> None:
    where = f"scorer {label!r} returned"
    if scores.ndim != 1:
        raise ScorerFailed(f"{where} an array of shape {scores.shape} on {set_name!r}; need 1-D")
    if scores.shape[0] != n:
        raise ScorerFailed(f"{where} {scores.shape[0]} scores for {n} samples on {set_name!r}")
    n_nan = int(np.isnan(scores).sum())
    n_inf = int(np.isinf(scores).sum())
    problems = [f"{c} {kind}" for c, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if c]
    if problems:
        raise ScorerFailed(f"{where} {' and '.join(problems)} values on {set_name!r}")


def fit_and_score(
    scorer: Scorer, train: Features, head: Head, sets: Mapping[str, Features]
) -> dict[str, np.ndarray]:
    """Fit ``scorer`` once and score every set; any failure becomes ``ScorerFailed``."""
    try:
        scorer.fit(train, head)
    except Exception as e:
        raise ScorerFailed(f"{type(e).__name__}: {e}") from e
    out: dict[str, np.ndarray] = {}
    for set_name, data in sets.items():
        try:
            scores = np.asarray(scorer.score(data), dtype=np.float64)
        except Exception as e:
            raise ScorerFailed(f"{type(e).__name__}: {e}") from e
        _check_scores(_label(scorer), set_name, scores, len(data))
        out[set_name] = scores
    return out
