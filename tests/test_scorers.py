"""Scorer registry, fit_and_score and every built-in scorer against its written-out formula."""

import sys
from collections.abc import Iterator
from typing import Self

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from oodbench import scoring
from oodbench.metrics import auroc
from oodbench.scoring import (
    Features,
    Head,
    Scorer,
    ScorerFailed,
    create_scorer,
    fit_and_score,
    get_scorer,
    list_scorers,
    register_scorer,
)
from tests.scorer_data import make_features, make_head, separable

BUILTINS = ["ash", "energy", "knn", "mahalanobis", "msp", "react"]


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    with scoring.SCORERS.scoped():
        yield


# --- registry -----------------------------------------------------------------------------


def test_builtins_listed_sorted_and_idempotent() -> None:
    scoring.SCORERS.load()
    scoring.SCORERS.load()
    names = list_scorers()
    assert names == sorted(names)
    assert set(BUILTINS) <= set(names)
    for name in BUILTINS:
        cls = get_scorer(name)
        assert cls.name == name
        assert f"oodbench.scorers.{name}" in sys.modules


def test_get_params_defaults() -> None:
    assert create_scorer("msp").get_params() == {}
    assert create_scorer("energy").get_params() == {"temperature": 1.0}
    assert create_scorer("react").get_params() == {"percentile": 90.0}
    assert create_scorer("ash").get_params() == {"variant": "s", "percentile": 90.0}
    assert create_scorer("knn").get_params() == {
        "k": 50,
        "alpha": 1.0,
        "seed": 0,
        "chunk_size": 256,
        "bank_chunk_size": 65536,
        "backend": "auto",
    }
    assert create_scorer("mahalanobis").get_params() == {"chunk_size": 1024}
    scorer = create_scorer("knn", k=7, chunk_size=3)
    assert isinstance(scorer, get_scorer("knn"))
    assert scorer.get_params()["k"] == 7 and scorer.k == 7 and scorer.chunk_size == 3
    assert repr(scorer) == ("KNN(k=7, alpha=1.0, seed=0, chunk_size=3, bank_chunk_size=65536, "
                            "backend='auto')")


def test_unknown_name_lists_available() -> None:
    with pytest.raises(KeyError, match=r"unknown scorer 'nope'.*energy.*mahalanobis.*msp"):
        create_scorer("nope")


def test_unknown_param_names_scorer_and_accepted() -> None:
    with pytest.raises(TypeError,
                       match=r"'knn'.*kk.*accepted: k, alpha, seed, chunk_size, "
                             "bank_chunk_size, backend"):
        create_scorer("knn", kk=3)
    with pytest.raises(TypeError, match=r"'msp'.*temperature.*accepted: none"):
        create_scorer("msp", temperature=2.0)


def test_invalid_param_values() -> None:
    with pytest.raises(ValueError, match="variant"):
        create_scorer("ash", variant="x")
    with pytest.raises(ValueError, match="temperature"):
        create_scorer("energy", temperature=0.0)
    with pytest.raises(ValueError, match=">= 1"):
        create_scorer("knn", k=0)


@pytest.mark.usefixtures("isolated_registry")
def test_name_clash_names_both_modules() -> None:
    @register_scorer("dummy")
    class First(Scorer):
        def score(self, data: Features) -> np.ndarray:
            return np.zeros(len(data))

    assert "dummy" in list_scorers() and First.name == "dummy"
    with pytest.raises(ValueError, match=r"'dummy'.*First.*test_scorers\.py.*Second"):

        @register_scorer("dummy")
        class Second(Scorer):
            def score(self, data: Features) -> np.ndarray:
                return np.ones(len(data))

    with pytest.raises(ValueError, match=r"oodbench\.scorers\.msp\.MSP \(.*msp\.py\).*Third"):

        @register_scorer("msp")
        class Third(Scorer):
            def score(self, data: Features) -> np.ndarray:
                return np.ones(len(data))

    assert get_scorer("dummy") is First


@pytest.mark.usefixtures("isolated_registry")
def test_register_requires_defaults() -> None:
    with pytest.raises(TypeError, match=r"'alpha'.*default"):

        @register_scorer("needs_alpha")
        class NeedsAlpha(Scorer):
            def __init__(self, alpha: float) -> None:
                self.alpha = alpha

            def score(self, data: Features) -> np.ndarray:
                return np.full(len(data), self.alpha)

    assert "needs_alpha" not in list_scorers()


def test_score_before_fit_raises() -> None:
    data = make_features(5, make_head(3, 4), seed=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        create_scorer("knn").score(data)


# --- fit_and_score ------------------------------------------------------------------------


class _Returns(Scorer):
    """Unregistered test scorer returning a fixed transformation of the logits' max."""

    name = "returns"

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode

    def fit(self, train: Features, head: Head) -> Self:
        if self.mode == "fit_error":
            raise ZeroDivisionError("division by zero")
        return super().fit(train, head)

    def score(self, data: Features) -> np.ndarray:
        out = data.logits.amax(dim=1).double().numpy().copy()
        if self.mode in ("nan", "nan_inf"):
            out[:3] = np.nan
        if self.mode in ("inf", "nan_inf"):
            out[-1] = np.inf
        if self.mode == "huge":  # finite in float64, inf in float32
            out[:] = 1e39 * np.arange(1, len(out) + 1)
        elif self.mode == "short":
            out = out[:-1]
        elif self.mode == "2d":
            out = out[:, None]
        elif self.mode == "score_error":
            raise IndexError("boom")
        return out


WHERE = f"{__name__}._Returns ({__file__})"
FAILED = f"ScorerFailed: scorer 'returns' ({WHERE}) returned"


@pytest.fixture
def sets() -> tuple[Features, Head, dict[str, Features]]:
    head = make_head(3, 4)
    return make_features(20, head, 0), head, {"cifar": make_features(8, head, 1)}


def test_fit_and_score_ok(sets: tuple[Features, Head, dict[str, Features]]) -> None:
    train, head, data = sets
    out = fit_and_score(_Returns(), train, head, {**data, "mnist": make_features(5, head, 2)})
    assert set(out) == {"cifar", "mnist"}
    assert out["mnist"].dtype == np.float64 and out["mnist"].shape == (5,)


def test_fit_and_score_keeps_float64_scores_beyond_float32(
    sets: tuple[Features, Head, dict[str, Features]],
) -> None:
    train, head, data = sets
    out = fit_and_score(_Returns(mode="huge"), train, head, data)["cifar"]
    assert out.dtype == np.float64 and np.isfinite(out).all() and out[-1] == 8e39
    assert auroc(out[4:], out[:4]) == 1.0


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("fit_error", "ZeroDivisionError: division by zero"),
        ("score_error", "IndexError: boom"),
        ("nan", f"{FAILED} 3 non-finite (NaN/inf) scores of 8 on 'cifar' (3 NaN values)"),
        ("inf", f"{FAILED} 1 non-finite (NaN/inf) scores of 8 on 'cifar' (1 infinite values)"),
        ("nan_inf", f"{FAILED} 4 non-finite (NaN/inf) scores of 8 on 'cifar' (3 NaN values, "
         "1 infinite values)"),
        ("short", f"{FAILED} 7 scores for 8 samples on 'cifar'"),
        ("2d", f"{FAILED} an array of shape (8, 1) on 'cifar'; need 1-D"),
    ],
)
def test_fit_and_score_failures(
    sets: tuple[Features, Head, dict[str, Features]], mode: str, reason: str
) -> None:
    train, head, data = sets
    with pytest.raises(ScorerFailed) as info:
        fit_and_score(_Returns(mode=mode), train, head, data)
    assert info.value.reason == reason
    assert str(info.value) == reason


def test_fit_and_score_wraps_knn_k_too_large(
    sets: tuple[Features, Head, dict[str, Features]],
) -> None:
    train, head, data = sets
    with pytest.raises(ScorerFailed, match="ValueError: knn: k=50 exceeds the bank of 20 samples"):
        fit_and_score(create_scorer("knn"), train, head, data)


# --- formulas -----------------------------------------------------------------------------


@pytest.fixture
def problem() -> tuple[Features, Head, Features]:
    head = make_head(5, 16)
    return make_features(101, head, seed=1), head, make_features(37, head, seed=2, labelled=False)


def test_msp_formula(problem: tuple[Features, Head, Features]) -> None:
    train, head, data = problem
    got = create_scorer("msp").fit(train, head).score(data)
    expected = torch.softmax(data.logits.double(), dim=1).max(dim=1).values.numpy()
    assert got.dtype == np.float64 and got.shape == (37,)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_energy_formula(problem: tuple[Features, Head, Features], temperature: float) -> None:
    train, head, data = problem
    got = create_scorer("energy", temperature=temperature).fit(train, head).score(data)
    expected = temperature * torch.logsumexp(data.logits.double() / temperature, dim=1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)


def _np_head(head: Head, feats: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(feats @ head.weight.double().numpy().T + head.bias.double().numpy())


@pytest.mark.parametrize("percentile", [90.0, 65.0])
def test_react_formula(problem: tuple[Features, Head, Features], percentile: float) -> None:
    train, head, data = problem
    scorer = create_scorer("react", percentile=percentile).fit(train, head)
    clip = np.percentile(train.features.numpy(), percentile)
    clipped = np.minimum(data.features.double().numpy(), clip)
    expected = torch.logsumexp(_np_head(head, clipped), dim=1).numpy()
    np.testing.assert_allclose(scorer.score(data), expected, rtol=1e-5)


def _ash_numpy(feats: np.ndarray, variant: str, percentile: float) -> np.ndarray:
    out = np.zeros_like(feats)
    n_dims = feats.shape[1]
    k = n_dims - int(np.round(n_dims * percentile / 100))
    for i, row in enumerate(feats):
        keep = np.argsort(-row)[:k]
        s1 = row.sum()
        if variant == "p":
            out[i, keep] = row[keep]
        elif variant == "b":
            out[i, keep] = s1 / k
        else:
            s2 = row[keep].sum()
            out[i, keep] = row[keep] * np.exp(s1 / s2)
    return out


@pytest.mark.parametrize("variant", ["s", "p", "b"])
@pytest.mark.parametrize("percentile", [90.0, 65.0])
def test_ash_formula(
    problem: tuple[Features, Head, Features], variant: str, percentile: float
) -> None:
    train, head, data = problem
    scorer = create_scorer("ash", variant=variant, percentile=percentile).fit(train, head)
    shaped = _ash_numpy(data.features.double().numpy(), variant, percentile)
    expected = torch.logsumexp(_np_head(head, shaped), dim=1).numpy()
    np.testing.assert_allclose(scorer.score(data), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("k", "chunk_size", "bank_chunk_size"),
    [(1, 1024, 16384), (5, 7, 13), (10, 36, 3), (50, 5, 100), (101, 37, 101)],
)
def test_knn_formula(
    problem: tuple[Features, Head, Features], k: int, chunk_size: int, bank_chunk_size: int
) -> None:
    train, head, data = problem
    scorer = create_scorer("knn", k=k, chunk_size=chunk_size, bank_chunk_size=bank_chunk_size,
                           backend="torch")  # the chunked search, whether faiss is installed
    got = scorer.fit(train, head).score(data)
    bank = train.features.double().numpy()
    queries = data.features.double().numpy()
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    dists = np.linalg.norm(queries[:, None, :] - bank[None, :, :], axis=2)
    expected = -np.sort(dists, axis=1)[:, k - 1]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_knn_k_larger_than_train(problem: tuple[Features, Head, Features]) -> None:
    train, head, _ = problem
    with pytest.raises(ValueError, match=r"k=102 exceeds the bank of 101 samples \(alpha=1.0"):
        create_scorer("knn", k=102).fit(train, head)
    with pytest.raises(ValueError, match=r"k=31 exceeds the bank of 30 samples \(alpha=0.3 of 101"):
        create_scorer("knn", k=31, alpha=0.3).fit(train, head)


def test_knn_alpha_subset_is_seeded_and_equals_knn_on_that_subset(
    problem: tuple[Features, Head, Features],
) -> None:
    train, head, data = problem
    scorer = create_scorer("knn", k=5, alpha=0.3, seed=4).fit(train, head)
    assert scorer.fit_summary()["bank_size"] == 30
    assert scorer.get_params()["alpha"] == 0.3
    full = torch.nn.functional.normalize(train.features, dim=1)
    rows = (scorer.bank_ @ full.T).argmax(dim=1)
    assert len(set(rows.tolist())) == 30
    subset = Features(train.features[rows], train.logits[rows], train.labels[rows])
    np.testing.assert_allclose(scorer.score(data),
                               create_scorer("knn", k=5).fit(subset, head).score(data), rtol=1e-6)
    again = create_scorer("knn", k=5, alpha=0.3, seed=4, chunk_size=7, bank_chunk_size=9,
                          backend="torch")
    np.testing.assert_allclose(again.fit(train, head).score(data), scorer.score(data), rtol=1e-6)
    other = create_scorer("knn", k=5, alpha=0.3, seed=5).fit(train, head).score(data)
    assert not np.allclose(other, scorer.score(data))
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        create_scorer("knn", alpha=0.0)


@pytest.mark.parametrize("name", ["knn", "nnguide"])
def test_neighbour_backends_agree(problem: tuple[Features, Head, Features], name: str) -> None:
    pytest.importorskip("faiss")
    train, head, data = problem
    torch_scorer = create_scorer(name, k=5, backend="torch").fit(train, head)
    faiss_scorer = create_scorer(name, k=5, backend="faiss").fit(train, head)
    assert torch_scorer.fit_summary()["backend"] == "torch"
    assert faiss_scorer.fit_summary()["backend"] == "faiss"
    assert create_scorer(name, k=5).fit(train, head).fit_summary()["backend"] == "faiss"
    np.testing.assert_allclose(faiss_scorer.score(data), torch_scorer.score(data), rtol=1e-5,
                               atol=1e-6)


def test_neighbour_backend_errors(problem: tuple[Features, Head, Features],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    train, head, data = problem
    with pytest.raises(ValueError, match="backend must be one of auto, torch, faiss"):
        create_scorer("knn", backend="annoy")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # no faiss here
    scorer = create_scorer("knn", k=5).fit(train, head)
    assert scorer.fit_summary()["backend"] == "torch"
    with pytest.raises(ValueError, match=r"needs faiss-cpu: pip install \"oodbench\[faiss\]\""):
        create_scorer("knn", k=5, backend="faiss").fit(train, head).score(data)


@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_mahalanobis_formula(problem: tuple[Features, Head, Features], chunk_size: int) -> None:
    train, head, data = problem
    got = create_scorer("mahalanobis", chunk_size=chunk_size).fit(train, head).score(data)
    feats = train.features.double().numpy()
    labels = train.labels.numpy()
    classes = np.unique(labels)
    means = np.stack([feats[labels == c].mean(axis=0) for c in classes])
    centred = feats - means[np.searchsorted(classes, labels)]
    inv_cov = np.linalg.inv(np.cov(centred, rowvar=False, bias=True))
    expected = np.array(
        [
            -min(scipy_mahalanobis(x, mu, inv_cov) ** 2 for mu in means)
            for x in data.features.double().numpy()
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_mahalanobis_needs_labels(problem: tuple[Features, Head, Features]) -> None:
    _, head, unlabelled = problem
    with pytest.raises(ValueError, match="known labels"):
        create_scorer("mahalanobis").fit(unlabelled, head)


# --- higher = more ID ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("msp", {}),
        ("energy", {}),
        ("react", {}),
        ("ash", {"variant": "s"}),
        ("ash", {"variant": "p"}),
        ("ash", {"variant": "b"}),
        ("knn", {}),
        ("mahalanobis", {}),
    ],
)
def test_higher_is_more_id(name: str, params: dict[str, str]) -> None:
    train, head, id_test, ood_test = separable()
    out = fit_and_score(
        create_scorer(name, **params), train, head, {"id": id_test, "ood": ood_test}
    )
    assert auroc(out["id"], out["ood"]) > 0.9
