"""maxlogit, gen, dice, scale, vim and klm against written-out float64 references."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import entropy

from oodbench.metrics import auroc
from oodbench.scoring import Features, Head, create_scorer, fit_and_score, get_scorer
from tests.scorer_data import make_features, make_head, separable

NEW = ["maxlogit", "gen", "dice", "scale", "vim", "klm"]


@pytest.fixture
def problem() -> tuple[Features, Head, Features]:
    head = make_head(5, 16)
    return make_features(101, head, seed=1), head, make_features(37, head, seed=2, labelled=False)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


def _fit_score(
    name: str, train: Features, head: Head, data: Features, **params: object
) -> np.ndarray:
    got = create_scorer(name, **params).fit(train, head).score(data)
    assert got.dtype == np.float64 and got.shape == (len(data),)
    return got


# --- registry and parameters --------------------------------------------------------------


def test_registered() -> None:
    for name in NEW:
        assert get_scorer(name).name == name


def test_get_params_defaults() -> None:
    assert create_scorer("maxlogit").get_params() == {}
    assert create_scorer("gen").get_params() == {"gamma": 0.1, "M": 100}
    assert create_scorer("dice").get_params() == {"p": 90.0}
    assert create_scorer("scale").get_params() == {"percentile": 85.0}
    assert create_scorer("vim").get_params() == {"dim": None}
    assert create_scorer("klm").get_params() == {}
    assert repr(create_scorer("gen", gamma=0.5, M=3)) == "GEN(gamma=0.5, M=3)"


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("gen", {"gamma": 0.0}, r"gen: gamma must be > 0, got 0.0"),
        ("gen", {"gamma": -1.0}, r"gen: gamma must be > 0, got -1.0"),
        ("gen", {"M": 0}, r"gen: M must be >= 1, got 0"),
        ("dice", {"p": 100.0}, r"dice: p must be in \[0, 100\), got 100.0"),
        ("dice", {"p": -1.0}, r"dice: p must be in \[0, 100\), got -1.0"),
        ("scale", {"percentile": 100.0}, r"scale: percentile must be in \[0, 100\), got 100.0"),
        ("scale", {"percentile": -5.0}, r"scale: percentile must be in \[0, 100\), got -5.0"),
        ("vim", {"dim": 0}, r"vim: dim must be >= 1 or None, got 0"),
    ],
)
def test_invalid_params(name: str, params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_scorer(name, **params)


@pytest.mark.parametrize("name", ["dice", "scale", "vim", "klm"])
def test_score_before_fit_raises(name: str, problem: tuple[Features, Head, Features]) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        create_scorer(name).score(problem[2])


# --- formulas -----------------------------------------------------------------------------


def test_maxlogit_formula(problem: tuple[Features, Head, Features]) -> None:
    train, head, data = problem
    got = _fit_score("maxlogit", train, head, data)
    np.testing.assert_allclose(got, _np(data.logits).max(axis=1), rtol=1e-6)


@pytest.mark.parametrize(("gamma", "M"), [(0.1, 100), (0.5, 3), (2.0, 1)])
def test_gen_formula(problem: tuple[Features, Head, Features], gamma: float, M: int) -> None:
    train, head, data = problem
    got = _fit_score("gen", train, head, data, gamma=gamma, M=M)
    expected = []
    for logits in _np(data.logits):
        top = np.sort(softmax(logits))[::-1][:M]
        expected.append(-sum(p**gamma * (1 - p) ** gamma for p in top))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_gen_confident_top_class_counts() -> None:
    """In float32, 1 - p rounds to 0 here and the top class would drop out of the sum."""
    logits = torch.tensor([[30.0, 0.0, 0.0]])
    data = Features(torch.ones(1, 2), logits, torch.tensor([0]))
    got = create_scorer("gen", gamma=0.1).score(data)
    p = softmax(np.array([30.0, 0.0, 0.0]))
    expected = -np.sum(p**0.1 * (1 - p) ** 0.1)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)


@pytest.mark.parametrize("p", [90.0, 50.0, 0.0])
def test_dice_formula(problem: tuple[Features, Head, Features], p: float) -> None:
    train, head, data = problem
    got = _fit_score("dice", train, head, data, p=p)
    weight, bias = _np(head.weight), _np(head.bias)
    contrib = weight * _np(train.features).mean(axis=0)
    mask = contrib > np.percentile(contrib, p)
    assert 0 < mask.sum() < mask.size
    expected = logsumexp(_np(data.features) @ (weight * mask).T + bias, axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("percentile", [85.0, 50.0, 0.0])
def test_scale_formula(problem: tuple[Features, Head, Features], percentile: float) -> None:
    train, head, data = problem
    got = _fit_score("scale", train, head, data, percentile=percentile)
    weight, bias = _np(head.weight), _np(head.bias)
    expected = []
    for a in _np(data.features):
        k = len(a) - round(len(a) * percentile / 100)
        ratio = a.sum() / np.sort(a)[::-1][:k].sum()
        expected.append(logsumexp(weight @ (a * np.exp(ratio)) + bias))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_scale_edge_cases(problem: tuple[Features, Head, Features]) -> None:
    train, head, _ = problem
    zero = Features(torch.zeros(2, 16), head.logits(torch.zeros(2, 16)), torch.full((2,), -1))
    got = create_scorer("scale").fit(train, head).score(zero)
    np.testing.assert_allclose(got, logsumexp(_np(head.bias)) * np.ones(2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"scale: percentile 99\.0 keeps no activation out of 16"):
        create_scorer("scale", percentile=99.0).fit(train, head).score(zero)


def _vim_reference(train: Features, head: Head, data: Features, dim: int) -> np.ndarray:
    weight, bias = _np(head.weight), _np(head.bias)
    origin = -np.linalg.pinv(weight) @ bias
    z = _np(train.features) - origin
    vals, vecs = np.linalg.eigh(z.T @ z / len(z))
    principal = vecs[:, np.argsort(-vals)[:dim]]
    projector = np.eye(len(origin)) - principal @ principal.T

    def residual_norm(feats: np.ndarray) -> np.ndarray:
        return np.linalg.norm((feats - origin) @ projector, axis=1)

    alpha = _np(train.logits).max(axis=1).mean() / residual_norm(_np(train.features)).mean()
    return logsumexp(_np(data.logits), axis=1) - alpha * residual_norm(_np(data.features))


@pytest.mark.parametrize(("dim", "effective"), [(None, 8), (3, 3), (15, 15)])
def test_vim_formula(
    problem: tuple[Features, Head, Features], dim: int | None, effective: int
) -> None:
    train, head, data = problem
    got = _fit_score("vim", train, head, data, dim=dim)
    np.testing.assert_allclose(got, _vim_reference(train, head, data, effective), rtol=1e-6)


def test_vim_dim_must_be_below_feature_size(problem: tuple[Features, Head, Features]) -> None:
    train, head, _ = problem
    with pytest.raises(ValueError, match=r"vim: dim = 16 must be below the feature size D = 16 "
                       r".* in scorer_params with N < 16, e.g. D // 2 = 8"):
        create_scorer("vim", dim=16).fit(train, head)
    one_d = Head(weight=torch.ones(3, 1), bias=torch.zeros(3))
    feats = torch.rand(10, 1)
    tiny = Features(feats, one_d.logits(feats), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"D = 1 dimension; ViM needs D >= 2"):
        create_scorer("vim").fit(tiny, one_d)


def _klm_reference(train: Features, data: Features) -> np.ndarray:
    probs = softmax(_np(train.logits), axis=1)
    preds = probs.argmax(axis=1)
    templates = [probs[preds == k].mean(axis=0) for k in np.unique(preds)]
    return np.array(
        [-min(entropy(p, q) for q in templates) for p in softmax(_np(data.logits), axis=1)]
    )


def test_klm_formula(problem: tuple[Features, Head, Features]) -> None:
    train, head, data = problem
    got = _fit_score("klm", train, head, data)
    np.testing.assert_allclose(got, _klm_reference(train, data), rtol=1e-6, atol=1e-9)
    assert np.all(got <= 1e-12)


def test_klm_skips_classes_never_predicted(problem: tuple[Features, Head, Features]) -> None:
    _, head, data = problem
    bias = head.bias.clone()
    bias[[1, 3]] = -100.0
    skewed = Head(weight=head.weight, bias=bias)
    train = make_features(101, skewed, seed=3)
    assert not bool(torch.isin(train.logits.argmax(dim=1), torch.tensor([1, 3])).any())
    got = _fit_score("klm", train, head, data)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _klm_reference(train, data), rtol=1e-6, atol=1e-9)


def test_klm_needs_train(problem: tuple[Features, Head, Features]) -> None:
    _, head, _ = problem
    empty = Features(torch.zeros(0, 16), torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="klm: needs a non-empty ID-train set"):
        create_scorer("klm").fit(empty, head)


# --- higher = more ID ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "min_auroc"),
    # ViM's residual term favours this OOD (smaller noise off the class directions); its
    # energy term still ranks ID first. test_vim_penalises_residual checks the residual.
    [("maxlogit", 0.9), ("gen", 0.9), ("dice", 0.9), ("scale", 0.9), ("vim", 0.7), ("klm", 0.9)],
)
def test_higher_is_more_id(name: str, min_auroc: float) -> None:
    train, head, id_test, ood_test = separable()
    out = fit_and_score(create_scorer(name), train, head, {"id": id_test, "ood": ood_test})
    assert auroc(out["id"], out["ood"]) > min_auroc


def test_vim_penalises_residual() -> None:
    """Same class signal, but OOD adds large activations on units the head ignores: the logits
    barely differ, so only ViM's residual term separates the sets."""
    gen = torch.Generator().manual_seed(0)
    n_classes, n_used, n_ignored = 4, 16, 16
    weight = torch.cat(
        [torch.eye(n_classes).repeat_interleave(4, dim=1), torch.zeros(n_classes, n_ignored)], dim=1
    )
    head = Head(weight=weight, bias=torch.zeros(n_classes))

    def make(n: int, ignored_scale: float) -> Features:
        labels = torch.randint(0, n_classes, (n,), generator=gen)
        used = 3 * weight[labels, :n_used] + 0.3 * torch.rand(n, n_used, generator=gen)
        ignored = ignored_scale * torch.rand(n, n_ignored, generator=gen)
        feats = torch.cat([used, ignored], dim=1)
        return Features(feats, head.logits(feats), labels)

    train, id_test, ood_test = make(400, 0.1), make(300, 0.1), make(300, 2.0)
    sets = {"id": id_test, "ood": ood_test}
    vim = fit_and_score(create_scorer("vim"), train, head, sets)
    assert auroc(vim["id"], vim["ood"]) > 0.9
    energy = fit_and_score(create_scorer("energy"), train, head, sets)
    assert auroc(energy["id"], energy["ood"]) < 0.7
