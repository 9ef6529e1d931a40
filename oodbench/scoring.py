"""Scorer API: cached features, the classifier head, the scorer base classes and their registry.

Convention everywhere: a score is a float64 per sample and HIGHER means MORE in-distribution.

Three kinds of scorer, split by what they consume (as in pytorch-ood): a :class:`Scorer` sees
the cached features and logits of a dataset; a :class:`MapScorer` sees a reduction of the last
feature map, from an extraction pass of its own; a :class:`ModelScorer` sees the model and
batches of preprocessed images (for input gradients, as ODIN needs).

Scorers share their inputs: :func:`fit_and_score` fingerprints the features, logits, labels
and head it hands a scorer, and one that writes to them raises :class:`InputsChanged`.

Scorers come from three places, all landing in one registry: the modules of the ``scorers``
package and the entry-point group ``oodbench.scorers`` of installed packages (an entry point
names a module whose scorers carry ``@register_scorer``, or a ``Scorer`` subclass, registered
under the entry point's name), both loaded by the registry on first lookup; and plugin files
named at run time (:mod:`oodbench.plugins`, for every other kind as well).
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, get_args, get_type_hints

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oodbench.errors import PluginError
from oodbench.registry import Registry, UnknownName, did_you_mean, origin, signature_params

if TYPE_CHECKING:  # a runtime import would load the data layer with every scorer
    from oodbench.adapters import ModelAdapter

__all__ = [
    "Features",
    "Head",
    "InputsChanged",
    "MapScorer",
    "ModelScorer",
    "PluginError",
    "Scorer",
    "ScorerFailed",
    "as_scores",
    "create_scorer",
    "fit_and_score",
    "get_scorer",
    "list_scorers",
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
        """A copy of the head of an ``nn.Linear`` layer as float32 tensors on the CPU (a zero
        bias where it has none): writing to it leaves the layer as it was."""
        weight = fc.weight.detach().float().cpu().clone()
        bias = fc.bias if fc.bias is not None else weight.new_zeros(weight.shape[0])
        return cls(weight, bias.detach().float().cpu().clone())


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
        ``h_.bias``); empty before ``fit``. A value of another type, or an attribute the
        class does not declare, is a TypeError."""
        state: dict[str, Any] = {}
        declared = _declared_fitted(type(self))
        for name, value in vars(self).items():
            if not _is_fitted_name(name):
                continue
            if name not in declared:
                raise TypeError(f"scorer {_label(self)!r}: fitted attribute {name!r} is not "
                                f"declared on its class; declare it there with the default "
                                f"None (e.g. {name}: torch.Tensor | None = None)")
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
        """Restore the fitted attributes from a :meth:`fitted_state` dict; a key that names no
        fitted attribute this scorer declares is a ValueError."""
        heads: dict[str, dict[str, torch.Tensor]] = {}
        declared = _declared_fitted(type(self))
        for key, value in state.items():
            name, dot, part = key.partition(".")
            if name not in declared or (dot and part not in ("weight", "bias")):
                raise ValueError(f"scorer {_label(self)!r}: {key!r} names no fitted attribute "
                                 f"of it (it has {', '.join(sorted(declared))}); is the state "
                                 "another scorer's?")
            if dot:
                heads.setdefault(name, {})[part] = value
            else:
                setattr(self, name, value)
        for name, parts in heads.items():
            setattr(self, name, Head(**parts))
        return self

    def check_fitted(self, n_dims: int) -> None:
        """Raise ValueError, naming the attribute, when the fitted state (say, one loaded from
        a file) cannot score ``n_dims``-dimensional features: a declared fitted attribute is
        unset, one holds another type than declared, or the head is not D wide in float32.
        Subclasses add their own checks (a bank's width, ``k`` within the bank)."""
        label = _label(self)
        missing = [n for n in _declared_fitted(type(self)) if n not in vars(self)]
        if missing:
            raise ValueError(f"scorer {label!r}: the fitted state lacks {', '.join(missing)}; "
                             "is it another scorer's?")
        hints = _fitted_types(type(self))
        for name, value in vars(self).items():
            kinds = hints.get(name)
            if kinds and value is not None and not isinstance(value, kinds):
                raise ValueError(f"scorer {label!r}: fitted attribute {name!r} is a "
                                 f"{type(value).__name__}, not a "
                                 f"{' or '.join(k.__name__ for k in kinds)}")
            if isinstance(value, Head):
                _check_head(label, name, value, n_dims)

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
        self, model: ModelAdapter, x: torch.Tensor, pixel_std: torch.Tensor
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


SCORERS: Registry[type[Scorer]] = Registry("scorer", base=Scorer, builtins="oodbench.scorers")
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


# the annotations of fitted attributes that :meth:`Scorer.check_fitted` checks values against
_FITTED_KINDS = (torch.Tensor, np.ndarray, Head, bool, int, float, str, list, dict)


def _declared_fitted(cls: type[Scorer]) -> list[str]:
    """The fitted attributes ``cls`` declares: public class attributes ending in ``_``."""
    return sorted(n for n in dir(cls) if _is_fitted_name(n) and not callable(getattr(cls, n)))


def _fitted_types(cls: type[Scorer]) -> dict[str, tuple[type, ...]]:
    """The types each fitted attribute is annotated with (``torch.Tensor | None``: Tensor),
    where the annotation resolves to plain classes; others are not checked."""
    out: dict[str, tuple[type, ...]] = {}
    for klass in reversed(cls.__mro__):
        try:
            hints = get_type_hints(klass)
        except Exception:  # a plug-in's annotation that does not resolve: not checked
            continue
        for name, hint in hints.items():
            if not _is_fitted_name(name):
                continue
            kinds = tuple(k for k in (get_args(hint) or (hint,))
                          if isinstance(k, type) and k is not type(None))
            if kinds and all(k in _FITTED_KINDS for k in kinds):
                # a float attribute may hold an int (JSON writes 2.0 as 2.0, a user 2)
                out[name] = (*kinds, int) if float in kinds else kinds
    return out


def _check_head(label: str, name: str, head: Head, n_dims: int) -> None:
    """A fitted head must be float32 and ``n_dims`` wide (the model's features)."""
    for part in ("weight", "bias"):
        dtype = getattr(head, part).dtype
        if dtype != torch.float32:
            raise ValueError(f"scorer {label!r}: fitted {name}.{part} is {dtype}, not "
                             "torch.float32")
    if head.weight.shape[1] != n_dims:
        raise ValueError(f"scorer {label!r}: fitted {name}.weight is "
                         f"{tuple(head.weight.shape)}, for {head.weight.shape[1]}-dimensional "
                         f"features; this model's are {n_dims}-dimensional")


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
        SCORERS.register(name)(cls)
        return cls

    return decorate


def create_scorer(name: str, **params: Any) -> Scorer:
    """Instantiate the scorer ``name`` with keyword parameters (defaults for the rest)."""
    return SCORERS.create(name, **params)


class ScorerFailed(RuntimeError):
    """A scorer raised or returned unusable scores; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InputsChanged(RuntimeError):
    """A scorer wrote to the features, logits, labels or head that it shares with the other
    scorers (in ``fit`` or ``score``, whether or not it then failed); ``reason`` names the
    scorer and what it changed. Not a :class:`ScorerFailed`: the caller's inputs are no longer
    what they were, so it must not go on with them (the pipeline fails that scorer and reads
    the inputs again for the next)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_FIELDS = ("features", "logits", "labels")


def _fingerprint(tensor: torch.Tensor) -> tuple[Any, ...]:
    """What any write to ``tensor`` changes: its dtype, layout and a CRC-32 of its bytes (a
    pass at memory speed, about 3 GB/s; no copy of a contiguous CPU tensor)."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return (tensor.dtype, tuple(tensor.shape), tensor.stride(), tensor.storage_offset(),
            tensor.data_ptr(), zlib.crc32(data.data))


class _Shared:
    """The inputs a scorer shares with the other scorers, fingerprinted when it starts."""

    def __init__(self, train: Features, head: Head, sets: Mapping[str, Features]) -> None:
        named = {f"ID-train {f}": getattr(train, f) for f in _FIELDS}
        named |= {"head weight": head.weight, "head bias": head.bias}
        for set_name, data in sets.items():
            named |= {f"{set_name!r} {f}": getattr(data, f) for f in _FIELDS}
        self.tensors = named
        self.before = self._fingerprints()

    def _fingerprints(self) -> dict[str, tuple[Any, ...]]:
        seen: dict[int, tuple[Any, ...]] = {}  # a tensor given twice is read once
        for tensor in self.tensors.values():
            if id(tensor) not in seen:
                seen[id(tensor)] = _fingerprint(tensor)
        return {n: seen[id(t)] for n, t in self.tensors.items()}

    def check(self, scorer: Scorer, failure: str = "") -> None:
        """Raise :class:`InputsChanged` if ``scorer`` changed any of them."""
        now = self._fingerprints()
        changed = [n for n, fp in self.before.items() if now[n] != fp]
        if changed:
            also = f"; it also failed: {failure}" if failure else ""
            raise InputsChanged(
                f"InputsChanged: scorer {_label(scorer)!r} ({origin(type(scorer))}) wrote to "
                f"the inputs it shares with the other scorers ({', '.join(changed)}): a scorer "
                "must not change its features, logits, labels or head in place; copy them "
                f"first (e.g. features.clone()){also}")


def _coarse(dtype: torch.dtype | np.dtype) -> str:
    """Why scores of ``dtype`` lost information before oodbench saw them, or ``""``: text,
    objects, dates or records are no scores; complex, bool, and every type of fewer than 32
    bits (float16, bfloat16, float8, int8, int16, ...) hold fewer distinct values than
    float32. int32 and int64 (ranks, counts) are exact."""
    if isinstance(dtype, torch.dtype):
        complex_, bool_, size = dtype.is_complex, dtype == torch.bool, dtype.itemsize
    else:
        complex_, bool_, size = dtype.kind == "c", dtype.kind == "b", dtype.itemsize
    if not isinstance(dtype, torch.dtype) and dtype.kind in "USOMmV":
        return "scores must be numbers (not text, objects, dates or records)"
    if complex_:
        return "complex scores are not real numbers"
    if bool_ or size < 4:
        return f"{dtype} holds fewer distinct values than float32, so precision was lost first"
    return ""


def _dtype(raw: Any) -> torch.dtype | np.dtype:
    """The dtype a scorer returned its scores in (a list's as numpy infers it)."""
    if isinstance(raw, torch.Tensor | np.ndarray | np.generic):
        return raw.dtype
    return np.asarray(raw).dtype


def as_scores(scorer: Scorer, raw: Any, set_name: str) -> np.ndarray:
    """``raw`` scores as float64, after refusing (:class:`ScorerFailed`) a type that cannot
    hold them (:func:`_coarse`)."""
    try:
        dtype = _dtype(raw)
        why = _coarse(dtype)
        scores = None if why else np.asarray(
            raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw, dtype=np.float64)
    except Exception as e:
        raise ScorerFailed(f"{type(e).__name__}: {e}") from e
    if scores is None:
        raise ScorerFailed(f"ScorerFailed: scorer {_label(scorer)!r} ({origin(type(scorer))}) "
                           f"returned {dtype} scores on {set_name!r}: {why}; return float32 "
                           "or float64 scores (oodbench.scoring.to_scores)")
    return scores


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
    Scores in a type coarser than float32 are refused (:func:`as_scores`). A scorer that
    writes to ``train``, ``head`` or a set's tensors raises :class:`InputsChanged` instead,
    naming them: they are fingerprinted before ``fit`` and checked after the last score.
    """
    shared = _Shared(train, head, sets)
    try:
        out = _fit_and_score(scorer, train, head, sets, score_set)
    except ScorerFailed as e:
        shared.check(scorer, e.reason)
        raise
    shared.check(scorer)
    return out


def _fit_and_score(
    scorer: Scorer,
    train: Features,
    head: Head,
    sets: Mapping[str, Features],
    score_set: Callable[[str], np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """:func:`fit_and_score`'s work."""
    try:
        scorer.fit(train, head)
    except Exception as e:
        raise ScorerFailed(f"{type(e).__name__}: {e}") from e
    out: dict[str, np.ndarray] = {}
    for set_name, data in sets.items():
        try:
            raw = score_set(set_name) if score_set is not None else scorer.score(data)
        except ScorerFailed:
            raise
        except Exception as e:
            raise ScorerFailed(f"{type(e).__name__}: {e}") from e
        scores = as_scores(scorer, raw, set_name)
        _check_scores(scorer, set_name, scores, len(data))
        out[set_name] = scores
    return out
