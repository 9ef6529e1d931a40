"""Training objectives by name: ``ce``, ``bgnorm`` and ``logitnorm``, in a small registry.

An objective sees one batch's feature map, logits, labels and the linear head, and returns
the loss plus a dict of its per-step stats (the progress line shows them and the checkpoint
records their last-epoch means): detached 0-d tensors, which the trainer sums where they are
and reads every few steps, or floats. It names itself in tables (``label``) and may
measure end-of-training diagnostics on the ID test set (``diagnostics``, ``DIAGNOSTICS``): the
trainer computes those of every objective of a benchmark for each of its checkpoints, so a CE
checkpoint carries the background norm that BG-norm lowers, for comparison.

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
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from oodbench.registry import Registry, signature_params

# a per-step stat or a diagnostic's part: a detached 0-d tensor (read later, with the others,
# in one host transfer) or a number
Stat = torch.Tensor | float


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
            local = torch.einsum("kc,bcl->blk", weight, flat) + head.bias.detach().float()
            p_y = local.softmax(-1).gather(2, labels.view(b, 1, 1).expand(b, h * w, 1))
            mask = p_y.squeeze(2) < tau
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
        if not (warmup_start >= 0 and warmup_epochs >= 0):  # epochs count from 0
            raise ValueError("warmup_start and warmup_epochs must be >= 0 (epochs), got "
                             f"{warmup_start} and {warmup_epochs}")
        self.lam, self.select, self.q, self.tau = lam, select, q, tau
        self.form, self.margin = form, margin
        self.warmup_start, self.warmup_epochs = warmup_start, warmup_epochs

    def term_start(self) -> tuple[str, float] | None:
        """The background term gets weight from ``warmup_start`` on; ``lam = 0`` (a control:
        cross-entropy with BG-norm's schedule) has no term to wait for."""
        return ("warmup_start", self.warmup_start) if self.lam else None

    def weight(self, epoch: float) -> float:
        """lambda at a (fractional) epoch: 0 before the warm-up, then a linear ramp."""
        if epoch < self.warmup_start:
            return 0.0
        if self.warmup_epochs <= 0:
            return self.lam
        return self.lam * min(1.0, (epoch - self.warmup_start) / self.warmup_epochs)

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
