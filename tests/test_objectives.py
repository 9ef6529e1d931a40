"""Objectives: BG-norm's background selection and gradient, LogitNorm's formula."""

import math

import pytest
import torch
from torch import nn

from oodbench.objectives import background_mask, create_objective, list_objectives, objective_params


def _head(c: int = 4, k: int = 3) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(c, k)


def test_cam_quantile_picks_exactly_the_lowest_q_locations() -> None:
    head = _head()
    fmap = torch.rand(5, 4, 3, 3)
    labels = torch.tensor([0, 1, 2, 0, 1])
    for q in (0.25, 0.5, 0.75):
        mask = background_mask(fmap, labels, head, "cam-quantile", q)
        n_bg = round(q * 9)
        cam = torch.einsum("bc,bchw->bhw", head.weight[labels], fmap).flatten(1)
        for i in range(5):
            expected = set(cam[i].argsort()[:n_bg].tolist())
            assert set(mask[i].flatten().nonzero().flatten().tolist()) == expected
            # every selected location has a lower CAM than every unselected one
            sel, rest = cam[i][mask[i].flatten()], cam[i][~mask[i].flatten()]
            assert sel.max() <= rest.min()


def test_prob_threshold_matches_the_local_softmax() -> None:
    head = _head()
    fmap = torch.rand(2, 4, 2, 2) * 3
    labels = torch.tensor([1, 2])
    mask = background_mask(fmap, labels, head, "prob-threshold", tau=0.3)
    for i in range(2):
        for h in range(2):
            for w in range(2):
                p = torch.softmax(head(fmap[i, :, h, w]), -1)[labels[i]]
                assert bool(mask[i, h, w]) == bool(p < 0.3)


@pytest.mark.parametrize("form", ["abs", "ratio", "hinge"])
@pytest.mark.parametrize("select", ["cam-quantile", "prob-threshold"])
def test_norm_gradient_reaches_only_selected_locations(form: str, select: str) -> None:
    head = _head()
    fmap = (torch.rand(3, 4, 4, 4) + 0.5).requires_grad_(True)
    labels = torch.tensor([0, 1, 2])
    obj = create_objective("bgnorm", lam=1.0, form=form, select=select, tau=0.5, margin=0.1)
    term, _ = obj.background_term(fmap, labels, head)
    term.backward()
    mask = background_mask(fmap, labels, head, select, 0.5, 0.5)
    assert mask.any() and (~mask).any()
    grad = fmap.grad.abs().sum(dim=1)
    assert torch.all(grad[~mask] == 0)
    assert torch.all(grad[mask] > 0)


def test_warmup_ramps_lambda() -> None:
    obj = create_objective("bgnorm", lam=0.2, warmup_start=1.0, warmup_epochs=2.0)
    assert obj.weight(0.5) == 0.0
    assert obj.weight(2.0) == pytest.approx(0.1)
    assert obj.weight(5.0) == pytest.approx(0.2)


def test_ce_objective_ignores_the_feature_map() -> None:
    head = _head()
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 0])
    loss, stats = create_objective("ce")(torch.rand(4, 4, 2, 2), logits, labels, head, 0.0)
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(logits, labels).item())
    assert set(stats) == {"ce"}


def test_registry_and_errors() -> None:
    assert {"ce", "bgnorm"} <= set(list_objectives())
    with pytest.raises(KeyError, match="available"):
        create_objective("nope")
    with pytest.raises(TypeError, match="accepted"):
        create_objective("bgnorm", lambda_=1.0)
    with pytest.raises(ValueError, match="form"):
        create_objective("bgnorm", form="square")


@pytest.mark.parametrize("temperature", [0.04, 1.0])
def test_logitnorm_is_ce_on_normalised_logits(temperature: float) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=gen) * 4
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    loss, _ = create_objective("logitnorm", temperature=temperature)(
        torch.rand(6, 3, 2, 2), logits, labels, torch.nn.Linear(3, 5), 0.0)
    expected = 0.0
    for z, y in zip(logits.tolist(), labels.tolist(), strict=True):
        scaled = [v / (temperature * math.sqrt(sum(u * u for u in z))) for v in z]
        expected -= scaled[y] - math.log(sum(math.exp(v) for v in scaled))
    assert loss.item() == pytest.approx(expected / 6, rel=1e-5)
    # invariant to the logits' scale, unlike CE
    scaled_loss, _ = create_objective("logitnorm", temperature=temperature)(
        torch.rand(6, 3, 2, 2), logits * 10, labels, torch.nn.Linear(3, 5), 0.0)
    assert scaled_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        create_objective("logitnorm", temperature=0.0)


@pytest.mark.parametrize("name", ["ce", "logitnorm", "bgnorm"])
def test_get_params_gives_every_constructor_parameter(name: str) -> None:
    assert create_objective(name).get_params() == objective_params(name)
    if name == "bgnorm":
        got = create_objective(name, lam=0.3, form="abs").get_params()
        assert got == objective_params(name) | {"lam": 0.3, "form": "abs"}
        assert got == vars(create_objective(name, lam=0.3, form="abs"))  # the keys' old source
