"""ViM: virtual-logit matching, energy minus the scaled norm of the off-principal residual.

u = -pinv(W) b (the origin at which the head's logits are all zero);  z = f - u
Sigma = (1/N) sum_i z_i z_i^T over ID-train;  R = the D - dim eigenvectors of Sigma outside the
top ``dim`` (eigenvalue order), spanning the residual space;  r(x) = ||R^T z(x)||_2
alpha = mean_train(max_c logits_c) / mean_train(r)
score(x) = logsumexp_c(logits(x)_c) - alpha * r(x)

Wang, Li, Feng & Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching", CVPR 2022,
arXiv:2203.10807. Default dim = D // 2. OpenOOD v1.5 fixes dim = 256 (configs/postprocessors/
vim.yml), half of the 512-d ResNet-18 features, which the OpenOOD presets take where the
features are wider; on features of D <= 256 dims OpenOOD's ViM leaves no residual space and
gives NaN scores, so a dim >= D is refused, by the config where the model's D is known and else
by fit (:meth:`ViM.check_feature_size`). As OpenOOD, u,
Sigma, R and alpha come from ID-train and the covariance is the uncentred one of z; unlike
OpenOOD (float32 inputs, np.linalg.eig), everything is float64 and the symmetric
eigendecomposition (eigh) of the scatter, accumulated over float64 chunks of ID-train
(:mod:`oodbench.stats`), is used rather than a decomposition of the full N x D matrix; the
training residual norms for alpha take a second chunked pass. The cached logits are used for
both terms.
"""

from typing import Self

import numpy as np
import torch

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores
from oodbench.stats import row_chunks, scatter


@register_scorer("vim")
class ViM(Scorer):
    """Energy minus alpha times the norm of the feature residual outside the principal space."""

    group = "features"

    origin_: torch.Tensor | None = None
    residual_basis_: torch.Tensor | None = None
    alpha_: float | None = None

    def __init__(self, dim: int | None = None) -> None:
        if dim is not None and dim < 1:
            raise ValueError(f"vim: dim must be >= 1 or None, got {dim}")
        self.dim = dim

    def check_feature_size(self, n_dims: int) -> None:
        """Refuse a dim that leaves no residual space on ``n_dims``-dimensional features."""
        if self.dim is not None and self.dim >= n_dims:
            raise ValueError(
                f"vim: dim = {self.dim} must be below the feature size D = {n_dims} (it leaves "
                "no residual space; OpenOOD's ViM gives all-NaN scores there); set vim = "
                f"{{ dim = N }} in scorer_params with N < {n_dims}, e.g. D // 2 = "
                f"{n_dims // 2} (oodbench's default)")
        if self.dim is None and n_dims < 2:
            raise ValueError(f"vim: the features have D = {n_dims} dimension; ViM needs D >= 2")

    def fit(self, train: Features, head: Head) -> Self:
        """Estimate the origin, the residual space and alpha on ID-train."""
        n_dims = train.features.shape[1]
        self.check_feature_size(n_dims)
        dim = n_dims // 2 if self.dim is None else self.dim
        if len(train) == 0:
            raise ValueError("vim: needs a non-empty ID-train set")
        weight, bias = head.weight.double(), head.bias.double()
        origin = -torch.linalg.pinv(weight) @ bias
        cov = scatter(train.features, origin) / len(train)
        _, eigvecs = torch.linalg.eigh(cov)
        basis = eigvecs[:, : n_dims - dim]
        norms = [((train.features[rows].double() - origin) @ basis).norm(dim=1)
                 for rows in row_chunks(len(train))]
        residual = torch.cat(norms).mean()
        if residual == 0:
            raise ValueError(f"vim: ID-train has no residual outside the top {dim} directions")
        self.alpha_ = float(train.logits.amax(dim=1).double().mean() / residual)
        self.origin_ = origin
        self.residual_basis_ = basis
        self.head_ = head
        return self

    def score(self, data: Features) -> np.ndarray:
        """Return logsumexp(logits) - alpha * ||R^T (f - u)|| per sample."""
        basis = self._fitted(self.residual_basis_)
        residual = ((data.features.double() - self._fitted(self.origin_)) @ basis).norm(dim=1)
        energy = torch.logsumexp(data.logits.double(), dim=1)
        return to_scores(energy - self._fitted(self.alpha_) * residual)
