"""Tests for oodbench.geometry: scatter traces, effective rank, nearest-neighbour distances and
norms on fixed tensors, against hand-worked values and numpy references."""

import math

import numpy as np
import pytest
import torch

from oodbench import stats
from oodbench.geometry import (
    BETWEEN,
    ERANK,
    RATIO,
    WITHIN,
    class_geometry,
    class_scatter,
    diagnose,
    effective_rank,
    nn_distances,
    per_sample,
    summary,
)
from oodbench.scoring import Features


def _random(n: int = 60, d: int = 5, k: int = 3, seed: int = 0) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.arange(n) % k


def _np_erank(x: np.ndarray) -> float:
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def test_two_separated_clusters_give_the_hand_worked_traces() -> None:
    # classes at (-10, 0) and (10, 0), each point 1 from its mean: tr(S_W) = 1, tr(S_B) = 100
    x = torch.tensor([[-10.0, 1.0], [-10.0, -1.0], [10.0, 1.0], [10.0, -1.0]])
    out = class_geometry(x, torch.tensor([0, 0, 1, 1]))
    assert out[WITHIN] == pytest.approx(1.0) and out[BETWEEN] == pytest.approx(100.0)
    assert out[RATIO] == pytest.approx(0.01)
    # centred, the singular values are 20 (x) and 2 (y): p = (10/11, 1/11)
    p = np.array([10, 1]) / 11
    assert out[ERANK] == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_scatter_matches_numpy_and_sums_to_the_covariance() -> None:
    x, y = _random()
    within, between = class_scatter(x, y)
    xn, yn = x.double().numpy(), y.numpy()
    mu = xn.mean(axis=0)
    ref_w = sum(np.outer(v - xn[yn == c].mean(0), v - xn[yn == c].mean(0))
                for v, c in zip(xn, yn, strict=True)) / len(xn)
    ref_b = sum((yn == c).sum() * np.outer(xn[yn == c].mean(0) - mu, xn[yn == c].mean(0) - mu)
                for c in range(3)) / len(xn)
    assert within.dtype == between.dtype == torch.float64
    np.testing.assert_allclose(within.numpy(), ref_w, atol=1e-12)
    np.testing.assert_allclose(between.numpy(), ref_b, atol=1e-12)
    np.testing.assert_allclose((within + between).numpy(), np.cov(xn.T, bias=True), atol=1e-12)


def test_unknown_labels_are_left_out_and_chunks_change_nothing(monkeypatch) -> None:
    x, y = _random()
    known = class_geometry(x[:40], y[:40])
    unknown = torch.cat([y[:40], torch.full((20,), -1)])
    assert class_geometry(x, unknown) == pytest.approx(known, rel=1e-12)
    monkeypatch.setattr(stats, "CHUNK_ROWS", 7)
    assert class_geometry(x[:40], y[:40]) == pytest.approx(known, rel=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_effective_rank_of_k_equal_directions_is_k(k: int) -> None:
    # rows +-e_j for j < k: already centred, k equal singular values, the rest 0
    eye = torch.eye(8)[:k]
    x = torch.cat([eye, -eye])
    assert effective_rank(torch.linalg.svdvals(x)) == pytest.approx(k)
    assert class_geometry(x, torch.zeros(2 * k, dtype=torch.long))[ERANK] == pytest.approx(k)


def test_effective_rank_matches_numpy_and_fails_as_nan() -> None:
    x, y = _random(d=6)
    assert class_geometry(x, y)[ERANK] == pytest.approx(_np_erank(x.double().numpy()), rel=1e-9)
    assert math.isnan(effective_rank(torch.zeros(4)))
    assert math.isnan(effective_rank(torch.tensor([1.0, float("nan")])))
    x[3, 2] = float("nan")
    out = class_geometry(x, y)
    assert math.isnan(out[ERANK]) and math.isnan(out[WITHIN])


def test_one_class_has_no_ratio() -> None:
    x, _ = _random()
    out = class_geometry(x, torch.zeros(len(x), dtype=torch.long))
    assert out[BETWEEN] == 0.0 and math.isnan(out[RATIO])


def test_nn_distances_match_a_brute_force_search_in_normalised_space() -> None:
    bank, _ = _random(n=50, seed=1)
    queries, _ = _random(n=20, seed=2)
    out = nn_distances({"q": queries, "self": bank, "scaled": 5 * queries}, bank)
    z = bank.double().numpy() / np.linalg.norm(bank.double().numpy(), axis=1, keepdims=True)
    q = queries.double().numpy()
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ref = np.linalg.norm(q[:, None] - z[None], axis=2).min(axis=1)
    assert out["q"].dtype == torch.float64
    np.testing.assert_allclose(out["q"].numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(out["scaled"].numpy(), ref, atol=1e-5)
    # to itself: 0, up to the float32 inner products the knn scorer also searches with
    assert out["self"].abs().max() < 1e-3


def _features(x: torch.Tensor, y: torch.Tensor) -> Features:
    return Features(x, x[:, :3] * 2, y)


def test_per_sample_and_summary() -> None:
    train, test, ood = _random(seed=1), _random(n=30, seed=2), _random(n=20, seed=3)
    sets = {"id": _features(*test), "far": _features(*ood)}
    samples = per_sample(_features(*train), sets)
    assert list(samples) == ["_featnorm/id", "_featnorm/far", "_nn_dist/id", "_nn_dist/far",
                             "_logit_norm/id", "_logit_norm/far"]
    assert all(v.dtype == np.float64 and v.shape == (len(sets[k.split("/")[1]]),)
               for k, v in samples.items())
    np.testing.assert_allclose(samples["_logit_norm/far"],
                               np.linalg.norm(2 * ood[0][:, :3].double().numpy(), axis=1))
    np.testing.assert_allclose(samples["_featnorm/id"],
                               np.linalg.norm(test[0].double().numpy(), axis=1))
    rows = summary(samples)
    assert len(rows) == 6 * 3
    assert rows[:3] == [{"quantity": f"featnorm_{q}", "set": "id",
                         "value": float(np.quantile(samples["_featnorm/id"], p))}
                        for q, p in (("q05", 0.05), ("median", 0.5), ("q95", 0.95))]
    assert math.isnan(summary({"_nn_dist/empty": np.zeros(0)})[0]["value"])


def test_diagnose_is_deterministic_and_puts_the_class_rows_first() -> None:
    train, test = _random(seed=1), _random(n=30, seed=2)
    sets = {"id": _features(*test), "far": _features(*_random(n=20, seed=3))}
    samples, rows = diagnose(_features(*train), sets, "id")
    again, rows2 = diagnose(_features(*train), sets, "id")
    assert rows == rows2 and all(np.array_equal(samples[k], again[k]) for k in samples)
    assert [r["quantity"] for r in rows[:4]] == [WITHIN, BETWEEN, RATIO, ERANK]
    assert {r["set"] for r in rows[:4]} == {"id"}
    assert rows[:4] == [{"quantity": q, "set": "id", "value": v}
                        for q, v in class_geometry(*test).items()]
    assert len(rows) == 4 + len(samples) * 3
