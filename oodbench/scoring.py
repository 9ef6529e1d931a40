"""Scorer API: cached features, the classifier head, the scorer base classes and their registry.

Convention everywhere: a score is a float64 per sample and HIGHER means MORE in-distribution.

Two kinds of scorer, split by what they consume (as in pytorch-ood): a :class:`Scorer` sees the
cached features and logits of a dataset; a :class:`ModelScorer` sees the model and batches of
preprocessed images (for input gradients, as ODIN needs).

Scorers come from three places, all landing in one registry: the modules of the ``scorers``
package; the entry-point group ``oodbench.scorers`` of installed packages (an entry point names
a module whose scorers carry ``@register_scorer``, or a ``Scorer`` subclass, registered under
the entry point's name); and plugin files named at run time. :mod:`oodbench.plugins` loads the
last two, for objectives, models and datasets as well.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oodbench.errors import PluginError
from oodbench.plugins import load_entry_points, load_plugin_file
from oodbench.registry import Registry, UnknownName, did_you_mean, origin, signature_params

__all__ = [
    "Features",
    "Head",
    "MapScorer",
    "ModelScorer",
    "PluginError",
    "Scorer",
    "ScorerFailed",
    "create_scorer",
    "fit_and_score",
    "get_scorer",
    "list_scorers",
    "load_builtin_scorers",
    "load_scorer_file",
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

    @classmethod
    def from_linear(cls, fc: nn.Linear) -> Head:
        """The head of an ``nn.Linear`` layer as detached float32 tensors on the CPU (a zero
        bias where it has none)."""
        weight = fc.weight.detach().float().cpu()
        bias = fc.bias if fc.bias is not None else weight.new_zeros(weight.shape[0])
        return cls(weight, bias.detach().float().cpu())


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

    Fitted state follows sklearn's convention: ``fit`` sets every value it learns as a public
    attribute whose name ends in ``_`` (``head_``, ``bank_``, ``alpha_``), declared on the
    class with the default ``None``; each is a tensor, a numpy array, a JSON value or a
    :class:`Head`. :meth:`fitted_state` and :meth:`load_fitted_state` read and restore them
    (:class:`oodbench.detector.Detector` saves them). Anything else derived from the fit (a
    search index) is a private attribute (``_index``) rebuilt from that state when missing.
    """

    name: ClassVar[str]
    group: ClassVar[str] = "other"  # one of SCORER_GROUPS
    head_: Head | None = None

    def get_params(self) -> dict[str, Any]:
        """Return the constructor parameters and their current values."""
        return {p: getattr(self, p) for p in _param_names(type(self))}

    def fit(self, train: Features, head: Head) -> Self:
        """Fit on ID-train features, labels and the classifier head; the default stores the head."""
        self.head_ = head
        return self

    def fitted_state(self) -> dict[str, Any]:
        """The fitted attributes by name (a :class:`Head` ``h_`` as ``h_.weight`` and
        ``h_.bias``); empty before ``fit``. A value of another type is a TypeError."""
        state: dict[str, Any] = {}
        for name, value in vars(self).items():
            if not _is_fitted_name(name):
                continue
            if isinstance(value, Head):
                state[f"{name}.weight"], state[f"{name}.bias"] = value.weight, value.bias
            elif isinstance(value, torch.Tensor | np.ndarray) or _is_json(value):
                state[name] = value
            else:
                raise TypeError(f"scorer {_label(self)!r}: fitted attribute {name!r} is a "
                                f"{type(value).__name__}, not a tensor, array, JSON value or "
                                "Head; keep derived objects in private attributes")
        return state

    def load_fitted_state(self, state: Mapping[str, Any]) -> Self:
        """Restore the fitted attributes from a :meth:`fitted_state` dict."""
        heads: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            name, dot, part = key.partition(".")
            if not _is_fitted_name(name) or (dot and part not in ("weight", "bias")):
                raise ValueError(f"scorer {_label(self)!r}: {key!r} names no fitted attribute")
            if dot:
                heads.setdefault(name, {})[part] = value
            else:
                setattr(self, name, value)
        for name, parts in heads.items():
            setattr(self, name, Head(**parts))
        return self

    def fit_summary(self) -> dict[str, Any]:
        """Facts about the fit worth recording beside the parameters (e.g. a bank's size)."""
        return {}

    def check_feature_size(self, n_dims: int) -> None:
        """Raise ValueError, naming the parameter and the fix, when the parameters cannot work
        on ``n_dims``-dimensional features (the config checks it against the model's size
        where that is known before training); any size suits the default."""
        return None

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


class ModelScorer(Scorer):
    """A scorer that needs the model itself: it scores batches of preprocessed images.

    ``fit`` still receives the ID-train features and the head; ``score_batch`` gets the model
    (in eval mode, on the scoring device), a batch of preprocessed images and the per-channel
    standard deviation of the preprocessing (so a perturbation can be set in pixel units).
    """

    def score(self, data: Features) -> np.ndarray:
        """Model scorers cannot score cached features."""
        raise TypeError(f"scorer {_label(self)!r} needs the model; call score_batch()")

    @abstractmethod
    def score_batch(
        self, model: nn.Module, x: torch.Tensor, pixel_std: torch.Tensor
    ) -> torch.Tensor:
        """Return the N scores of a batch, higher = more in-distribution."""


class MapScorer(Scorer):
    """A scorer that consumes the last feature map (B x C x H x W), not the pooled features.

    :meth:`reduce` keeps what it needs of each batch's map (N x D per sample) during an
    extraction pass of its own, cached per checkpoint, dataset and parameters and run only
    when such a scorer is requested; ``fit`` and ``score`` then receive :class:`Features`
    whose ``features`` are that reduction (the logits and labels are the pass's own).
    """

    @abstractmethod
    def reduce(self, fmap: torch.Tensor) -> torch.Tensor:
        """The N x D per-sample values this scorer keeps of a batch's feature map."""


load_builtin_scorers = load_entry_points  # the name before objectives and models had plugins


def load_scorer_file(path: Path | str) -> list[str]:
    """The scorers that a plugin file registers (see :func:`oodbench.plugins.load_plugin_file`,
    which also returns its objectives, models and datasets)."""
    return load_plugin_file(path).get("scorers", [])


SCORERS: Registry[type[Scorer]] = Registry("scorer", loader=load_entry_points)
list_scorers = SCORERS.names
get_scorer = SCORERS.get

ALL_SCORERS = "all"
SCORER_GROUPS: dict[str, str] = {
    "logits": "read the logits (and the head)",
    "activations": "rectify, prune or rescale the penultimate activations, then energy",
    "features": "read the geometry of the penultimate features: distances, subspaces, means",
    "model": "need the model itself (input gradients) or its feature map",
    "other": "plugin scorers that name no group",
}


def scorer_group(group: str) -> list[str]:
    """The scorers of a group (``"all"``: every scorer), groups in ``SCORER_GROUPS`` order and
    registration order within a group."""
    if group != ALL_SCORERS and group not in SCORER_GROUPS:
        raise UnknownName(f"unknown scorer group {group!r};{did_you_mean(group, SCORER_GROUPS)} "
                          f"groups: {ALL_SCORERS}, {', '.join(SCORER_GROUPS)}")
    order = list(SCORER_GROUPS)
    names = [n for n in SCORERS.ordered() if group in (ALL_SCORERS, get_scorer(n).group)]
    return sorted(names, key=lambda n: order.index(get_scorer(n).group)
                  if get_scorer(n).group in order else len(order))


def expand_scorers(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Scorer names from ``"all"``, a group name, or a list of scorer and group names, in order,
    each once. Unknown names raise :class:`UnknownName` with a suggestion."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        if item == ALL_SCORERS or item in SCORER_GROUPS:
            out += [n for n in scorer_group(item) if n not in out]
        else:
            get_scorer(item)
            out.append(item)
    return out


def _is_fitted_name(name: str) -> bool:
    return name.endswith("_") and not name.startswith("_")


def _is_json(value: object) -> bool:
    """Whether ``value`` round-trips through JSON unchanged (no tuples, string keys)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _is_json(v)
                                           for k, v in value.items())


def _param_names(cls: type[Scorer]) -> list[str]:
    return [p.name for p in signature_params(cls)]


def _label(scorer: Scorer) -> str:
    return getattr(scorer, "name", type(scorer).__name__)


def register_scorer(name: str) -> Callable[[type[S]], type[S]]:
    """Class decorator registering a Scorer subclass under ``name`` and setting ``cls.name``."""

    def decorate(cls: type[S]) -> type[S]:
        SCORERS.check(name, cls, Scorer)
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


def _check_scores(scorer: Scorer, set_name: str, scores: np.ndarray, n: int) -> None:
    """Raise :class:`ScorerFailed` unless ``scores`` are ``n`` finite values in one dimension."""
    where = f"ScorerFailed: scorer {_label(scorer)!r} ({origin(type(scorer))}) returned"
    if scores.ndim != 1:
        raise ScorerFailed(f"{where} an array of shape {scores.shape} on {set_name!r}; need 1-D")
    if scores.shape[0] != n:
        raise ScorerFailed(f"{where} {scores.shape[0]} scores for {n} samples on {set_name!r}")
    n_nan = int(np.isnan(scores).sum())
    n_inf = int(np.isinf(scores).sum())
    if n_nan or n_inf:
        kinds = ", ".join(f"{c} {kind} values" for c, kind in ((n_nan, "NaN"), (n_inf, "infinite"))
                          if c)
        raise ScorerFailed(f"{where} {n_nan + n_inf} non-finite (NaN/inf) scores of {n} on "
                           f"{set_name!r} ({kinds})")


def fit_and_score(
    scorer: Scorer,
    train: Features,
    head: Head,
    sets: Mapping[str, Features],
    score_set: Callable[[str], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Fit ``scorer`` once and score every set; any failure becomes ``ScorerFailed``.

    ``score_set(name)`` replaces ``scorer.score(sets[name])`` where scores need more than the
    cached features (a :class:`ModelScorer`, run by the pipeline over the set's images).
    """
    try:
        scorer.fit(train, head)
    except Exception as e:
        raise ScorerFailed(f"{type(e).__name__}: {e}") from e
    out: dict[str, np.ndarray] = {}
    for set_name, data in sets.items():
        try:
            raw = score_set(set_name) if score_set is not None else scorer.score(data)
            scores = np.asarray(raw, dtype=np.float64)
        except Exception as e:
            raise ScorerFailed(f"{type(e).__name__}: {e}") from e
        _check_scores(scorer, set_name, scores, len(data))
        out[set_name] = scores
    return out
