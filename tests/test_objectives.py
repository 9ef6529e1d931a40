"""Objectives: BG-norm's background selection and gradient; LogitNorm's, SSOD's, T2FNorm's and
RegMixup's losses against their papers' formulas, written out by hand on fixed tensors."""

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


@pytest.mark.parametrize("name", ["ce", "logitnorm", "bgnorm", "ssod", "t2fnorm", "regmixup"])
def test_get_params_gives_every_constructor_parameter(name: str) -> None:
    assert create_objective(name).get_params() == objective_params(name)
    if name == "bgnorm":
        got = create_objective(name, lam=0.3, form="abs").get_params()
        assert got == objective_params(name) | {"lam": 0.3, "form": "abs"}
        assert got == vars(create_objective(name, lam=0.3, form="abs"))  # the keys' old source


def _ce(logits: list[float], y: int) -> float:
    """Cross-entropy of one logit vector, by hand."""
    return -(logits[y] - math.log(sum(math.exp(v) for v in logits)))


def test_t2fnorm_is_ce_on_scaled_normalised_features() -> None:
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(5, 3, generator=gen) * 7
    labels = torch.tensor([0, 1, 2, 3, 0])
    head = nn.Linear(3, 4)
    obj = create_objective("t2fnorm", tau=0.1)
    loss = obj.loss(feats, labels, head)
    w, b = head.weight.tolist(), head.bias.tolist()
    expected = 0.0
    for f, y in zip(feats.tolist(), labels.tolist(), strict=True):
        norm = math.sqrt(sum(v * v for v in f))
        z = [sum(wk[c] * f[c] / norm / 0.1 for c in range(3)) + bk
             for wk, bk in zip(w, b, strict=True)]
        expected += _ce(z, y)
    assert loss.item() == pytest.approx(expected / 5, rel=1e-5)
    assert obj.loss(feats * 100, labels, head).item() == pytest.approx(loss.item(), rel=1e-5)

    # a step trains on the normalised features and hands back the network's raw logits
    raw = torch.randn(5, 4, generator=gen)
    step_loss, stats, logits = obj.step(lambda x: (x, feats, raw), torch.zeros(5, 1, 2, 2),
                                        labels, head, 0.0, torch.Generator())
    assert logits is raw and step_loss.item() == pytest.approx(loss.item())
    assert set(stats) == {"ce"}
    with pytest.raises(ValueError, match="tau"):
        create_objective("t2fnorm", tau=0.0)


def test_regmixup_is_clean_ce_plus_the_mixup_ce_of_one_mixed_batch() -> None:
    images = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 1])
    weight = torch.randn(3, 2, generator=torch.Generator().manual_seed(3))
    seen: list[torch.Tensor] = []

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seen.append(x)
        return x, x, x @ weight.T

    obj = create_objective("regmixup", alpha=20.0, eta=0.7)
    loss, stats, logits = obj.step(forward, images, labels, nn.Linear(2, 3), 0.0,
                                   torch.Generator().manual_seed(5))
    lam, perm = obj.draw(4, torch.Generator().manual_seed(5))  # the same draws again
    assert stats["lam"] == lam and 0.0 < lam < 1.0
    (batch,) = seen  # clean and mixed images in one pass
    mixed = lam * images + (1 - lam) * images[perm]
    assert torch.equal(batch[:4], images) and torch.allclose(batch[4:], mixed)
    assert torch.allclose(logits, images @ weight.T)
    clean_z, mix_z = (images @ weight.T).tolist(), (mixed @ weight.T).tolist()
    y, y_perm = labels.tolist(), labels[perm].tolist()
    ce = sum(_ce(z, t) for z, t in zip(clean_z, y, strict=True)) / 4
    mix = sum(lam * _ce(z, a) + (1 - lam) * _ce(z, b)
              for z, a, b in zip(mix_z, y, y_perm, strict=True)) / 4
    assert loss.item() == pytest.approx(ce + 0.7 * mix, rel=1e-5)
    assert stats["ce"].item() == pytest.approx(ce, rel=1e-5)


def test_regmixup_draws_lambda_from_beta_alpha_alpha() -> None:
    gen = torch.Generator().manual_seed(0)
    lams = [create_objective("regmixup", alpha=20.0).draw(8, gen)[0] for _ in range(400)]
    # Beta(20, 20): mean 1/2, sd 1 / (2 sqrt(41)) = 0.078
    assert abs(sum(lams) / 400 - 0.5) < 0.02
    sd = math.sqrt(sum((v - 0.5) ** 2 for v in lams) / 400)
    assert 0.06 < sd < 0.1
    with pytest.raises(ValueError, match="alpha"):
        create_objective("regmixup", alpha=0.0)


def _ssod_setup() -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    """A 1 x 2 x 1 x 3 feature map whose locations the head gives class 0 with p ~ 1, ~ 0
    and 1/2: one ID location, one OOD location, one neither."""
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        head.bias.zero_()
    fmap = torch.tensor([[[[9.0, 0.0, 1.0]], [[0.0, 9.0, 1.0]]]])
    return fmap, torch.tensor([0]), head


def test_ssod_trains_its_ood_head_on_confident_and_background_locations() -> None:
    fmap, labels, head = _ssod_setup()
    torch.manual_seed(0)
    obj = create_objective("ssod", threshold=0.99, weight=2.0)
    (ood_head,) = obj.extra_modules(head)
    with torch.no_grad():
        ood_head.weight.copy_(torch.tensor([[0.3, -0.2], [0.1, 0.4]]))
        ood_head.bias.copy_(torch.tensor([0.05, -0.1]))
    is_id, is_ood = obj.location_masks(fmap, labels, head)
    assert is_id.flatten().tolist() == [True, False, False]
    assert is_ood.flatten().tolist() == [False, True, False]
    logits = torch.tensor([[2.0, -1.0]])
    loss, stats = obj(fmap, logits, labels, head, 0.0)
    w, b = ood_head.weight.tolist(), ood_head.bias.tolist()

    def g(f: list[float]) -> list[float]:
        return [sum(wk[c] * f[c] for c in range(2)) + bk for wk, bk in zip(w, b, strict=True)]

    term = _ce(g([9.0, 0.0]), 1) + _ce(g([0.0, 9.0]), 0)  # one location each: means of one
    assert stats["ood"].item() == pytest.approx(term, rel=1e-5)
    assert loss.item() == pytest.approx(_ce([2.0, -1.0], 0) + 2.0 * term, rel=1e-5)

    # the term's gradient reaches the feature map at the selected locations only
    fmap.requires_grad_(True)
    obj.ood_term(fmap, labels, head).backward()
    grad = fmap.grad.abs().sum(dim=1).flatten()
    assert grad[0] > 0 and grad[1] > 0 and grad[2] == 0


def test_ssod_adds_nothing_for_a_kind_of_location_a_batch_lacks() -> None:
    fmap, labels, head = _ssod_setup()
    obj = create_objective("ssod", threshold=0.99)
    obj.extra_modules(head)
    undecided = fmap[..., 2:]  # p = 1/2: neither ID nor OOD
    assert obj.ood_term(undecided, labels, head).item() == 0.0
    with pytest.raises(ValueError, match="threshold"):
        create_objective("ssod", threshold=0.4)


def test_ssod_term_ramps_in_after_its_warmup() -> None:
    fmap, labels, head = _ssod_setup()
    obj = create_objective("ssod", weight=2.0, warmup_start=1.0, warmup_epochs=2.0)
    obj.extra_modules(head)
    logits = torch.tensor([[2.0, -1.0]])
    ce = _ce([2.0, -1.0], 0)
    term = obj.ood_term(fmap, labels, head).item()
    for epoch, weight in ((0.5, 0.0), (2.0, 1.0), (4.0, 2.0)):
        loss, _ = obj(fmap, logits, labels, head, epoch)
        assert loss.item() == pytest.approx(ce + weight * term, rel=1e-5)
    assert obj.term_start() == ("warmup_start", 1.0)
    assert create_objective("ssod", weight=0.0).term_start() is None
    with pytest.raises(ValueError, match="warmup"):
        create_objective("ssod", warmup_start=-1.0)
