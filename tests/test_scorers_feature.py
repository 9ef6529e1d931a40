"""Feature-space scorers she, rmds, fdbd and nnguide against written-out float64 references."""

from typing import Any

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from scipy.special import logsumexp

from oodbench.metrics import auroc
from oodbench.scoring import Features, Head, create_scorer, fit_and_score
from tests.scorer_data import make_features, make_head, separable

NEW = ["she", "rmds", "fdbd", "nnguide"]

Problem = tuple[Features, Head, Features]


def _np(values: torch.Tensor) -> np.ndarray:
    return values.double().numpy()


@pytest.fixture
def problem() -> Problem:
    """101 labelled ID-train samples, 37 unlabelled queries, 5 classes, 16 dimensions.

    Zero-sum weight rows, so that every class is predicted for some of the positive features.
    """
    raw = make_head(5, 16)
    head = Head(raw.weight - raw.weight.mean(dim=1, keepdim=True), raw.bias)
    return make_features(101, head, seed=1), head, make_features(37, head, seed=2, labelled=False)


def _mostly_correct(train: Features) -> Features:
    """Labels = the head's predictions, except every third sample is labelled one class off."""
    n_classes = train.logits.shape[1]
    labels = train.logits.argmax(dim=1)
    labels[::3] = (labels[::3] + 1) % n_classes
    return Features(train.features, train.logits, labels)


# --- parameters ---------------------------------------------------------------------------


def test_get_params_defaults() -> None:
    assert create_scorer("she").get_params() == {}
    assert create_scorer("rmds").get_params() == {"chunk_size": 1024}
    assert create_scorer("fdbd").get_params() == {"distance_as_normalizer": True}
    assert create_scorer("nnguide").get_params() == {
        "k": 100,
        "alpha": 1.0,
        "seed": 0,
        "chunk_size": 256,
        "bank_chunk_size": 65536,
        "backend": "auto",
    }
    assert repr(create_scorer("nnguide", k=7, alpha=0.5)) == (
        "NNGuide(k=7, alpha=0.5, seed=0, chunk_size=256, bank_chunk_size=65536, backend='auto')"
    )


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("rmds", {"chunk_size": 0}, r"^rmds: chunk_size must be >= 1, got 0"),
        ("fdbd", {"distance_as_normalizer": "yes"}, r"^fdbd: .*must be a bool, got 'yes'"),
        ("nnguide", {"k": 0}, r"^nnguide: k, .* must be >= 1, got 0, 256, 65536"),
        ("nnguide", {"chunk_size": 0}, r"^nnguide: .*got 100, 0, 65536"),
        ("nnguide", {"bank_chunk_size": -1}, r"^nnguide: .*got 100, 256, -1"),
        ("nnguide", {"alpha": 0.0}, r"^nnguide: alpha must be in \(0, 1\], got 0.0"),
        ("nnguide", {"alpha": 1.5}, r"^nnguide: alpha must be in \(0, 1\], got 1.5"),
        ("nnguide", {"alpha": float("nan")}, r"^nnguide: alpha .*got nan"),
    ],
)
def test_invalid_params(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_scorer(name, **params)


@pytest.mark.parametrize("name", NEW)
def test_score_before_fit_raises(name: str, problem: Problem) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        create_scorer(name).score(problem[2])


@pytest.mark.parametrize("name", ["she", "rmds"])
def test_unlabelled_train_raises(name: str, problem: Problem) -> None:
    _, head, unlabelled = problem
    with pytest.raises(
        ValueError, match=rf"^{name}: needs .*known labels, got 37 .* 37 unlabelled"
    ):
        create_scorer(name).fit(unlabelled, head)


@pytest.mark.parametrize("name", ["fdbd", "nnguide"])
def test_unlabelled_train_is_fine(name: str, problem: Problem) -> None:
    train, head, unlabelled = problem
    scorer = create_scorer(name, **({"k": 5} if name == "nnguide" else {}))
    got = scorer.fit(unlabelled, head).score(train)
    assert got.dtype == np.float64 and got.shape == (101,) and np.isfinite(got).all()


# --- she ----------------------------------------------------------------------------------


def _she_reference(train: Features, data: Features, use_labels: bool = True) -> np.ndarray:
    feats, preds, labels = _np(train.features), _np(train.logits).argmax(1), train.labels.numpy()
    keep = (preds == labels) if use_labels else np.ones(len(preds), dtype=bool)
    patterns = [feats[keep & (preds == k)].mean(axis=0) for k in range(train.logits.shape[1])]
    queries, logits = _np(data.features), _np(data.logits)
    return np.array([f @ patterns[int(np.argmax(z))] for f, z in zip(queries, logits, strict=True)])


def test_she_formula(problem: Problem) -> None:
    raw, head, data = problem
    train = _mostly_correct(raw)
    got = create_scorer("she").fit(train, head).score(data)
    assert got.dtype == np.float64 and got.shape == (37,)
    np.testing.assert_allclose(got, _she_reference(train, data), rtol=1e-10)
    # the fixture does exercise the "correctly classified only" filter
    assert not np.allclose(got, _she_reference(train, data, use_labels=False), rtol=1e-4)


def test_she_class_without_correct_sample(problem: Problem) -> None:
    _, head, _ = problem
    bias = head.bias.clone()
    bias[[0, 3]] = -1e4  # classes 0 and 3 are never predicted
    skewed = Head(head.weight, bias)
    train = _mostly_correct(make_features(101, skewed, seed=1))
    with pytest.raises(ValueError, match=r"^she: no correctly classified .* class\(es\) \[0, 3\]"):
        create_scorer("she").fit(train, skewed)


# --- rmds ---------------------------------------------------------------------------------


def _rmds_reference(train: Features, data: Features) -> np.ndarray:
    feats, labels = _np(train.features), train.labels.numpy()
    classes = np.unique(labels)
    means = np.stack([feats[labels == c].mean(axis=0) for c in classes])
    centred = feats - means[np.searchsorted(classes, labels)]
    inv_cov = np.linalg.inv(np.cov(centred, rowvar=False, bias=True))
    mean_0 = feats.mean(axis=0)
    inv_cov_0 = np.linalg.inv(np.cov(feats, rowvar=False, bias=True))
    out = []
    for x in _np(data.features):
        background = scipy_mahalanobis(x, mean_0, inv_cov_0) ** 2
        out.append(-min(scipy_mahalanobis(x, mu, inv_cov) ** 2 - background for mu in means))
    return np.array(out)


@pytest.mark.parametrize("chunk_size", [1024, 7, 1])
def test_rmds_formula(problem: Problem, chunk_size: int) -> None:
    train, head, data = problem
    got = create_scorer("rmds", chunk_size=chunk_size).fit(train, head).score(data)
    assert got.dtype == np.float64 and got.shape == (37,)
    np.testing.assert_allclose(got, _rmds_reference(train, data), rtol=1e-8, atol=1e-8)


# --- fdbd ---------------------------------------------------------------------------------


def _fdbd_reference(train: Features, head: Head, data: Features, to_mean: bool) -> np.ndarray:
    weight, bias = _np(head.weight), _np(head.bias)
    centre = _np(train.features).mean(axis=0) if to_mean else np.zeros(weight.shape[1])
    out = []
    for f in _np(data.features):
        c = int(np.argmax(weight @ f + bias))
        dists = [
            abs((weight[c] - weight[k]) @ f + bias[c] - bias[k])
            / np.linalg.norm(weight[c] - weight[k])
            for k in range(len(weight))
            if k != c
        ]
        out.append(np.mean(dists) / np.linalg.norm(f - centre))
    return np.array(out)


@pytest.mark.parametrize("to_mean", [True, False])
def test_fdbd_formula(problem: Problem, to_mean: bool) -> None:
    train, head, data = problem
    got = create_scorer("fdbd", distance_as_normalizer=to_mean).fit(train, head).score(data)
    assert got.dtype == np.float64 and got.shape == (37,)
    np.testing.assert_allclose(got, _fdbd_reference(train, head, data, to_mean), rtol=1e-9)


def test_fdbd_zero_distance_is_finite(problem: Problem) -> None:
    train, head, _ = problem
    zero = torch.zeros(1, 16)
    data = Features(zero, head.logits(zero), torch.full((1,), -1))
    got = create_scorer("fdbd", distance_as_normalizer=False).fit(train, head).score(data)
    assert np.isfinite(got).all() and got[0] > 0


def test_fdbd_degenerate_heads(problem: Problem) -> None:
    train, head, _ = problem
    with pytest.raises(ValueError, match=r"^fdbd: needs a head with >= 2 classes, got 1"):
        create_scorer("fdbd").fit(train, Head(head.weight[:1], head.bias[:1]))
    weight = head.weight.clone()
    weight[3] = weight[1]
    with pytest.raises(
        ValueError, match=r"identical head weights, got pairs \[\[1, 3\], \[3, 1\]\]"
    ):
        create_scorer("fdbd").fit(train, Head(weight, head.bias))


# --- nnguide ------------------------------------------------------------------------------


def _nnguide_bank(train: Features) -> np.ndarray:
    feats = _np(train.features)
    confidence = logsumexp(_np(train.logits), axis=1)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True) * confidence[:, None]


def _nnguide_reference(bank: np.ndarray, data: Features, k: int) -> np.ndarray:
    out = []
    for f, z in zip(_np(data.features), _np(data.logits), strict=True):
        sims = bank @ (f / np.linalg.norm(f))
        out.append(logsumexp(z) * np.sort(sims)[::-1][:k].mean())
    return np.array(out)


@pytest.mark.parametrize(
    ("k", "chunk_size", "bank_chunk_size"),
    [(1, 1024, 16384), (5, 7, 13), (10, 36, 3), (100, 5, 100), (101, 37, 101)],
)
def test_nnguide_formula(problem: Problem, k: int, chunk_size: int, bank_chunk_size: int) -> None:
    train, head, data = problem
    scorer = create_scorer("nnguide", k=k, chunk_size=chunk_size, bank_chunk_size=bank_chunk_size,
                           backend="torch")  # the chunked search, whether faiss is installed
    got = scorer.fit(train, head).score(data)
    assert got.dtype == np.float64 and got.shape == (37,)
    np.testing.assert_allclose(got, _nnguide_reference(_nnguide_bank(train), data, k), rtol=1e-5)


def test_nnguide_subset_bank(problem: Problem) -> None:
    train, head, data = problem
    full = _nnguide_bank(train)
    scorer = create_scorer("nnguide", k=10, alpha=0.3, seed=4, chunk_size=8, bank_chunk_size=7,
                            backend="torch")
    got = scorer.fit(train, head).score(data)
    bank = _np(scorer.bank_)
    assert bank.shape == (30, 16)  # round(0.3 * 101)
    rows = np.linalg.norm(bank[:, None, :] - full[None, :, :], axis=2).argmin(axis=1)
    np.testing.assert_allclose(bank, full[rows], rtol=1e-5)
    assert len(set(rows.tolist())) == 30
    np.testing.assert_allclose(got, _nnguide_reference(full[rows], data, 10), rtol=1e-5)
    same = create_scorer("nnguide", k=10, alpha=0.3, seed=4, chunk_size=8, bank_chunk_size=7,
                         backend="torch")
    np.testing.assert_array_equal(same.fit(train, head).score(data), got)
    other = create_scorer("nnguide", k=10, alpha=0.3, seed=5).fit(train, head).score(data)
    assert not np.allclose(other, got)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"k": 102}, r"k=102 exceeds the bank of 101 samples \(alpha=1.0 of 101 ID-train"),
        ({"k": 31, "alpha": 0.3}, r"k=31 exceeds the bank of 30 samples \(alpha=0.3 of 101"),
    ],
)
def test_nnguide_k_larger_than_bank(problem: Problem, params: dict[str, Any], message: str) -> None:
    train, head, _ = problem
    with pytest.raises(ValueError, match=rf"^nnguide: {message}"):
        create_scorer("nnguide", **params).fit(train, head)


# --- higher = more ID ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_higher_is_more_id(name: str) -> None:
    train, head, id_test, shifted = separable()
    sets = {"id": id_test, "ood": shifted}
    out = fit_and_score(create_scorer(name), train, head, sets)
    assert auroc(out["id"], out["ood"]) > 0.9


def test_ash_map_shapes_the_map_then_pools() -> None:
    from oodbench.scorers.ash import ash
    from oodbench.scoring import create_scorer

    torch.manual_seed(0)
    fmap = torch.relu(torch.randn(5, 4, 3, 3, dtype=torch.float64))
    scorer = create_scorer("ash-map", variant="s", percentile=70.0)
    flat = fmap.reshape(5, -1)
    k = 36 - round(36 * 0.7)
    want = torch.zeros_like(flat)
    for i in range(5):  # written out: keep the top k of each sample, scale by exp(s1 / s2)
        top = flat[i].topk(k)
        want[i, top.indices] = top.values * torch.exp(flat[i].sum() / top.values.sum())
    torch.testing.assert_close(scorer.reduce(fmap), want.reshape(5, 4, 9).mean(dim=2))
    torch.testing.assert_close(ash(flat, "s", 70.0), want)
    # with nothing pruned (ASH-P at 0), the map scorer is the energy of the pooled features
    plain = create_scorer("ash-map", variant="p", percentile=0.0)
    torch.testing.assert_close(plain.reduce(fmap), fmap.mean(dim=(2, 3)))
