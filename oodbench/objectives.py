"""Training objectives by name, in a small registry: ``ce``, ``bgnorm`` (ours) and the
published training-time methods it is compared with, ``logitnorm``, ``ssod``, ``t2fnorm`` and
``regmixup``.

An objective sees one batch's feature map, logits, labels and the linear head, and returns
the loss plus a dict of its per-step stats (the progress line shows them and the checkpoint
records their last-epoch means): detached 0-d tensors, which the trainer sums where they are
and reads every few steps, or floats. It names itself in tables (``label``) and may
measure end-of-training diagnostics on the ID test set (``diagnostics``, ``DIAGNOSTICS``): the
trainer computes those of every objective of a benchmark for each of its checkpoints, so a CE
checkpoint carries the background norm that BG-norm lowers, for comparison. An objective that
needs more than one forward pass's outputs overrides :meth:`Objective.step` (RegMixup's second,
mixed batch; T2FNorm's penultimate features), and one with trainable parts of its own (SSOD's
OOD head) returns them from :meth:`Objective.extra_modules`.

BG-norm is **our reconstruction** of "Local Background Features Matter in Out-of-Distribution
Detection" (arXiv 2510.12259) from its abstract and from its predecessor (Pei et al., ICLR 2024,
"Image Background Serves as Good Proxy for Out-of-distribution Data"): the paper's full text is
not public. Each location f_hw of the last feature map is the feature of a small image made of
that region alone; background locations of ID images act as simulated OOD features, and the
objective lowers their L2 norm:

    L = CE(logits, y) + lambda_t * mean_{(i,h,w) in S} g(||f_ihw||_2)

S, the background set, is chosen without gradient:

* ``cam-quantile``: the lowest-q fraction of locations of each image by the ground-truth class
  activation cam_hw = W[y] . f_hw;
* ``prob-threshold``: locations where softmax(W f_hw + b)[y] < tau (as in Pei et al.).

``form`` picks g: ``abs`` is the plain norm; ``ratio`` divides by the (stop-gradient) mean norm
of the other (foreground) locations, which makes the term scale-invariant; ``hinge`` is
max(0, ||f|| - margin). lambda_t ramps linearly from 0 to ``lam`` between epochs
``warmup_start`` and ``warmup_start + warmup_epochs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from oodbench.registry import Registry, signature_params

# a per-step stat or a diagnostic's part: a detached 0-d tensor (read later, with the others,
# in one host transfer) or a number
Stat = torch.Tensor | float
# the model's forward pass: images -> (last feature map, penultimate features, logits)
Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def create_objective(name: str, **params: Any) -> Objective:
    """Instantiate an objective; unknown parameters are an error naming the accepted ones."""
    return OBJECTIVES.create(name, **params)


class Objective:
    """Base class: ``__call__(fmap, logits, labels, head, epoch) -> (loss, stats)``.

    ``label`` is the display name of a training that uses the objective under its own name;
    ``DIAGNOSTICS`` maps each diagnostic that :meth:`diagnostics` measures to a description.
    Each constructor parameter is kept as the attribute of its name (:meth:`get_params`).
    """

    name: ClassVar[str]
    label: ClassVar[str] = ""
    DIAGNOSTICS: ClassVar[dict[str, str]] = {}

    def __call__(
        self,
        fmap: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        head: nn.Linear,
        epoch: float,
    ) -> tuple[torch.Tensor, dict[str, Stat]]:
        raise NotImplementedError

    def step(
        self,
        forward: Forward,
        images: torch.Tensor,
        labels: torch.Tensor,
        head: nn.Linear,
        epoch: float,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, Stat], torch.Tensor]:
        """One training step's (loss, stats, logits of ``images``): by default one forward pass
        and :meth:`__call__` on it. ``generator`` (CPU) is the training's own stream of random
        draws, for an objective that draws (RegMixup's mixing)."""
        fmap, _, logits = forward(images)
        loss, stats = self(fmap, logits.float(), labels, head, epoch)
        return loss, stats, logits

    def extra_modules(self, head: nn.Linear) -> list[nn.Module]:
        """Trainable modules of the objective's own (none by default), created once before
        training, after the model (so from the training's seed); they train with the model and
        are not part of the checkpoint. ``head`` is the model's linear head."""
        return []

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters and their values (what enters a checkpoint's key)."""
        return {p.name: getattr(self, p.name) for p in signature_params(type(self))}

    @classmethod
    def diagnostics(
        cls, fmap: torch.Tensor, labels: torch.Tensor, head: nn.Linear
    ) -> dict[str, tuple[Stat, Stat]]:
        """(sum, count) per diagnostic over one evaluation batch; the mean is sum / count."""
        return {}

    def term_start(self) -> tuple[str, float] | None:
        """``(parameter, epoch)`` where the objective is plain cross-entropy until a term of its
        own gets weight from that (fractional) epoch, set by that parameter; the config refuses
        a training that ends before. ``None`` where no epoch count makes it cross-entropy by
        accident: its term is on from the first step, or off throughout by request."""
        return None


OBJECTIVES: Registry[type[Objective]] = Registry("objective", base=Objective)
register_objective = OBJECTIVES.register
list_objectives = OBJECTIVES.names
get_objective = OBJECTIVES.get
objective_params = OBJECTIVES.params


def objective_label(name: str) -> str:
    """Display name of the objective ``name`` (its ``label``, else the name)."""
    return get_objective(name).label or name


@register_objective("ce")
class CrossEntropy(Objective):
    """Plain cross-entropy."""

    label = "CE"

    def __call__(self, fmap: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                 head: nn.Linear, epoch: float) -> tuple[torch.Tensor, dict[str, Stat]]:
        loss = F.cross_entropy(logits, labels)
        return loss, {"ce": loss.detach()}


@register_objective("logitnorm")
class LogitNorm(Objective):
    """Cross-entropy on L2-normalised logits, a training-time OOD competitor of BG-norm.

    L = CE(z / (t * ||z||_2), y), z the logits. Wei, Xie, Cheng, Feng, An & Li, "Mitigating
    Neural Network Overconfidence with Logit Normalization", ICML 2022, arXiv:2205.09310.
    Default temperature t = 0.04, the paper's CIFAR-10 value.
    """

    label = "LogitNorm"

    def __init__(self, temperature: float = 0.04) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def __call__(self, fmap: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                 head: nn.Linear, epoch: float) -> tuple[torch.Tensor, dict[str, Stat]]:
        norms = logits.norm(p=2, dim=1, keepdim=True) + 1e-7
        loss = F.cross_entropy(logits / (norms * self.temperature), labels)
        return loss, {"ce": loss.detach()}


def ramp(epoch: float, weight: float, start: float, epochs: float) -> float:
    """A term's weight at a (fractional) epoch: 0 before ``start``, then rising linearly to
    ``weight`` over ``epochs`` epochs (at once for 0)."""
    if epoch < start:
        return 0.0
    if epochs <= 0:
        return weight
    return weight * min(1.0, (epoch - start) / epochs)


def _check_warmup(start: float, epochs: float) -> None:
    if not (start >= 0 and epochs >= 0):  # epochs count from 0
        raise ValueError("warmup_start and warmup_epochs must be >= 0 (epochs), got "
                         f"{start} and {epochs}")


def local_target_prob(fmap: torch.Tensor, labels: torch.Tensor, head: nn.Linear) -> torch.Tensor:
    """B x H x W: the probability the head's softmax on each location's feature f_hw gives the
    image's class, ``softmax(W f_hw + b)[y]``, computed without gradient in float32."""
    with torch.no_grad():
        b, _, h, w = fmap.shape
        flat = fmap.detach().float().flatten(2)  # B x C x HW
        local = (torch.einsum("kc,bcl->blk", head.weight.detach().float(), flat)
                 + head.bias.detach().float())
        p_y = local.softmax(-1).gather(2, labels.view(b, 1, 1).expand(b, h * w, 1))
    return p_y.view(b, h, w)


def background_mask(
    fmap: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Linear,
    select: str = "cam-quantile",
    q: float = 0.5,
    tau: float = 0.1,
) -> torch.Tensor:
    """Boolean B x H x W mask of background locations, computed without gradient.

    ``cam-quantile`` marks exactly round(q * H * W) locations per image (at least one), those
    with the lowest ground-truth class activation W[y] . f_hw; ties are broken by position.
    ``prob-threshold`` marks locations where the head's softmax on f_hw gives class y a
    probability below ``tau``.
    """
    with torch.no_grad():
        b, _, h, w = fmap.shape
        flat = fmap.detach().float().flatten(2)  # B x C x HW
        weight = head.weight.detach().float()
        if select == "cam-quantile":
            cam = torch.einsum("bc,bcl->bl", weight[labels], flat)
            n_bg = max(1, round(q * h * w))
            idx = cam.argsort(dim=1, stable=True)[:, :n_bg]
            mask = torch.zeros_like(cam, dtype=torch.bool).scatter_(1, idx, True)
        elif select == "prob-threshold":
            mask = local_target_prob(fmap, labels, head) < tau
        else:
            raise ValueError(f"select must be 'cam-quantile' or 'prob-threshold', got {select!r}")
    return mask.view(b, h, w)


@register_objective("bgnorm")
class BackgroundNorm(Objective):
    """CE plus lambda times the mean L2 norm of background-location features (see module doc).

    Defaults come from the Fashion-MNIST validation-side sweep (``results/fmnist/ablation.md``):
    the lowest mean FPR95 over the six scorers among variants within 0.5 points of CE's
    validation accuracy.
    """

    label = "BG-norm"
    DIAGNOSTICS: ClassVar[dict[str, str]] = {
        "bg_norm": "mean feature norm at background locations (lowest-half true-class CAM)",
        "fg_norm": "mean feature norm at the other (foreground) locations",
    }

    def __init__(
        self,
        lam: float = 0.5,
        select: Literal["cam-quantile", "prob-threshold"] = "cam-quantile",
        q: float = 0.5,
        tau: float = 0.1,
        form: Literal["abs", "ratio", "hinge"] = "ratio",
        margin: float = 1.0,
        warmup_start: float = 2.0,
        warmup_epochs: float = 1.0,
    ) -> None:
        if form not in ("abs", "ratio", "hinge"):
            raise ValueError(f"form must be 'abs', 'ratio' or 'hinge', got {form!r}")
        if select not in ("cam-quantile", "prob-threshold"):
            raise ValueError(f"select must be 'cam-quantile' or 'prob-threshold', got {select!r}")
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must lie in (0, 1), got {q}")
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lam must be finite and >= 0, got {lam}")
        _check_warmup(warmup_start, warmup_epochs)
        self.lam, self.select, self.q, self.tau = lam, select, q, tau
        self.form, self.margin = form, margin
        self.warmup_start, self.warmup_epochs = warmup_start, warmup_epochs

    def term_start(self) -> tuple[str, float] | None:
        """The background term gets weight from ``warmup_start`` on; ``lam = 0`` (a control:
        cross-entropy with BG-norm's schedule) has no term to wait for."""
        return ("warmup_start", self.warmup_start) if self.lam else None

    def weight(self, epoch: float) -> float:
        """lambda at a (fractional) epoch: 0 before the warm-up, then a linear ramp."""
        return ramp(epoch, self.lam, self.warmup_start, self.warmup_epochs)

    def background_term(
        self, fmap: torch.Tensor, labels: torch.Tensor, head: nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(differentiable term, mean background norm); only masked locations get gradient."""
        mask = background_mask(fmap, labels, head, self.select, self.q, self.tau)
        norms = fmap.float().norm(dim=1)  # B x H x W
        bg = norms[mask]
        if bg.numel() == 0:
            zero = norms.sum() * 0.0
            return zero, zero.detach()
        if self.form == "abs":
            term = bg.mean()
        elif self.form == "hinge":
            term = (bg - self.margin).clamp_min(0).mean()
        else:
            fg = norms[~mask].detach()
            term = bg.mean() / (fg.mean() + 1e-6) if fg.numel() else bg.mean() * 0.0
        return term, bg.mean().detach()

    def __call__(self, fmap: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                 head: nn.Linear, epoch: float) -> tuple[torch.Tensor, dict[str, Stat]]:
        ce = F.cross_entropy(logits, labels)
        lam = self.weight(epoch)
        term, bg_norm = self.background_term(fmap, labels, head)
        loss = ce + lam * term if lam > 0 else ce
        return loss, {"ce": ce.detach(), "bg": bg_norm}

    @classmethod
    def diagnostics(cls, fmap: torch.Tensor, labels: torch.Tensor, head: nn.Linear
                    ) -> dict[str, tuple[Stat, Stat]]:
        """Feature norms at background (the lowest-half CAM of the true class) and foreground
        locations of the last feature map, whatever objective trained the model."""
        mask = background_mask(fmap, labels, head, "cam-quantile", 0.5)
        norms = fmap.float().norm(dim=1)
        return {"bg_norm": (norms[mask].sum(), mask.sum()),
                "fg_norm": (norms[~mask].sum(), (~mask).sum())}


@register_objective("ssod")
class SelfSupervisedSampling(Objective):
    """SSOD: CE plus a binary ID/OOD head trained on local features of ID images.

    Pei et al., "Image Background Serves as Good Proxy for Out-of-distribution Data", ICLR
    2024, arXiv:2307.00519 (BG-norm's predecessor). Each
    location f_hw of the last feature map is classified by the model's head, without gradient;
    with p_hw = softmax(W f_hw + b)[y], locations with p_hw >= ``threshold`` are ID samples and
    those with p_hw <= 1 - ``threshold`` are OOD samples (the background) for a 2-way linear OOD
    head g, which trains with the network:

        L = CE(logits, y) + weight * (mean_{ID locations} CE(g(f_hw), 1)
                                      + mean_{OOD locations} CE(g(f_hw), 0))

    Each mean is over its own locations (the reference's "loss-wise balance"); a batch without
    locations of a kind adds nothing for it. Defaults (threshold 0.99, weight 1, g initialised
    N(0, 0.01) with zero bias) follow the authors' public reference implementation. Departures:
    the training is oodbench's (SGD, its schedule, no label smoothing); the OOD head is used for
    training only: oodbench scores the trained network with the post-hoc scorers, not with
    SSOD's own product of the classifier's confidence and g's P(ID); and the term may start
    late: its weight ramps from 0 to ``weight`` between epochs ``warmup_start`` and
    ``warmup_start + warmup_epochs`` (default 0 and 0: from the first step, as the reference,
    which trains on a pretrained backbone whose local predictions mean something at once).
    """

    label = "SSOD"

    def __init__(self, threshold: float = 0.99, weight: float = 1.0, warmup_start: float = 0.0,
                 warmup_epochs: float = 0.0) -> None:
        if not 0.5 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0.5, 1), got {threshold}")
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        _check_warmup(warmup_start, warmup_epochs)
        self.threshold, self.weight = threshold, weight
        self.warmup_start, self.warmup_epochs = warmup_start, warmup_epochs
        self._ood_head: nn.Linear | None = None

    def term_start(self) -> tuple[str, float] | None:
        """The OOD head's term gets weight from ``warmup_start`` on."""
        return ("warmup_start", self.warmup_start) if self.weight else None

    def extra_modules(self, head: nn.Linear) -> list[nn.Module]:
        """The 2-way OOD head on the features (class 1: ID, class 0: OOD)."""
        self._ood_head = nn.Linear(head.in_features, 2)
        nn.init.normal_(self._ood_head.weight, 0.0, 0.01)
        nn.init.zeros_(self._ood_head.bias)
        return [self._ood_head]

    def location_masks(self, fmap: torch.Tensor, labels: torch.Tensor, head: nn.Linear
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ID, OOD) boolean B x H x W masks of the locations the OOD head trains on."""
        p_y = local_target_prob(fmap, labels, head)
        return p_y >= self.threshold, p_y <= 1.0 - self.threshold

    def ood_term(self, fmap: torch.Tensor, labels: torch.Tensor, head: nn.Linear
                 ) -> torch.Tensor:
        """The OOD head's balanced cross-entropy on the selected locations."""
        if self._ood_head is None:
            raise RuntimeError("ssod: extra_modules() creates the OOD head before training")
        is_id, is_ood = self.location_masks(fmap, labels, head)
        # B x H x W x 2 log-probabilities; masked means, so the device is never read
        logp = self._ood_head(fmap.permute(0, 2, 3, 1).float()).log_softmax(-1)
        term = fmap.new_zeros((), dtype=torch.float32)
        for mask, target in ((is_id, 1), (is_ood, 0)):
            weight = mask.float()
            term = term - (logp[..., target] * weight).sum() / weight.sum().clamp_min(1.0)
        return term

    def __call__(self, fmap: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                 head: nn.Linear, epoch: float) -> tuple[torch.Tensor, dict[str, Stat]]:
        ce = F.cross_entropy(logits, labels)
        term = self.ood_term(fmap, labels, head)
        weight = ramp(epoch, self.weight, self.warmup_start, self.warmup_epochs)
        return ce + weight * term, {"ce": ce.detach(), "ood": term.detach()}


@register_objective("t2fnorm")
class T2FNorm(Objective):
    """T2FNorm: CE on logits of L2-normalised penultimate features, scaled by 1 / tau.

    L = CE(W (h / ||h||_2) / tau + b, y), h the penultimate features. Regmi et al., "T2FNorm:
    Train-time Feature Normalization for OOD Detection in Image Classification", 2023,
    arXiv:2305.17797; in OpenOOD v1.5.
    At test time the network is used as it is (raw features, unnormalised), as in the paper and
    OpenOOD. Default tau = 0.1, the paper's and OpenOOD's.
    """

    label = "T2FNorm"

    def __init__(self, tau: float = 0.1) -> None:
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau must be finite and > 0, got {tau}")
        self.tau = tau

    def loss(self, features: torch.Tensor, labels: torch.Tensor, head: nn.Linear
             ) -> torch.Tensor:
        """The T2FNorm loss of penultimate ``features``."""
        normed = F.normalize(features.float(), dim=1) / self.tau
        return F.cross_entropy(F.linear(normed, head.weight.float(), head.bias.float()), labels)

    def step(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor,
             head: nn.Linear, epoch: float, generator: torch.Generator
             ) -> tuple[torch.Tensor, dict[str, Stat], torch.Tensor]:
        _, features, logits = forward(images)
        loss = self.loss(features, labels, head)
        return loss, {"ce": loss.detach()}, logits


@register_objective("regmixup")
class RegMixup(Objective):
    """RegMixup: CE on the clean batch plus a mixup cross-entropy on a mixed copy of it.

    L = CE(f(x), y) + eta * (lam * CE(f(x~), y) + (1 - lam) * CE(f(x~), y[perm])),
    x~ = lam * x + (1 - lam) * x[perm], lam ~ Beta(alpha, alpha) once per batch, perm a random
    permutation of the batch. Pinto et al., "Using Mixup as a Regularizer Can Surprisingly
    Improve Accuracy and Out-of-Distribution Robustness", NeurIPS 2022,
    arXiv:2206.14502; in OpenOOD v1.5. Defaults alpha = 20 (the paper's CIFAR-10 value) and
    eta = 1. As in the authors' and OpenOOD's code, the clean and mixed images go through the
    network as one batch (so batch norm sees both); their code averages the loss over that
    double batch, which is this L / 2.
    """

    label = "RegMixup"

    def __init__(self, alpha: float = 20.0, eta: float = 1.0) -> None:
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be finite and > 0, got {alpha}")
        if not (eta >= 0 and math.isfinite(eta)):
            raise ValueError(f"eta must be finite and >= 0, got {eta}")
        self.alpha, self.eta = alpha, eta

    def draw(self, n: int, generator: torch.Generator) -> tuple[float, torch.Tensor]:
        """(lam, perm) for a batch of ``n``, from the training's generator."""
        perm = torch.randperm(n, generator=generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return float(np.random.default_rng(seed).beta(self.alpha, self.alpha)), perm

    def loss(self, clean: torch.Tensor, mixed: torch.Tensor, labels: torch.Tensor,
             lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, clean CE) from the logits of the clean and the mixed images."""
        ce = F.cross_entropy(clean, labels)
        mix = (lam * F.cross_entropy(mixed, labels)
               + (1.0 - lam) * F.cross_entropy(mixed, labels[perm]))
        return ce + self.eta * mix, ce

    def step(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor,
             head: nn.Linear, epoch: float, generator: torch.Generator
             ) -> tuple[torch.Tensor, dict[str, Stat], torch.Tensor]:
        n = len(images)
        lam, perm = self.draw(n, generator)
        perm = perm.to(images.device)
        mixed = lam * images + (1.0 - lam) * images[perm]
        _, _, logits = forward(torch.cat([images, mixed]))
        loss, ce = self.loss(logits[:n].float(), logits[n:].float(), labels, lam, perm)
        return loss, {"ce": ce.detach(), "lam": lam}, logits[:n]
