"""Synthetic features and heads shared by the scorer tests."""

import torch

from oodbench.scoring import Features, Head


def make_head(n_classes: int, n_dims: int, seed: int = 0) -> Head:
    gen = torch.Generator().manual_seed(seed)
    return Head(
        weight=torch.randn(n_classes, n_dims, generator=gen),
        bias=torch.randn(n_classes, generator=gen),
    )


def make_features(n: int, head: Head, seed: int, labelled: bool = True) -> Features:
    """Continuous positive features (no ties) with logits from ``head``."""
    gen = torch.Generator().manual_seed(seed)
    n_classes, n_dims = head.weight.shape
    feats = torch.rand(n, n_dims, generator=gen) * 3 + 0.01
    labels = torch.randint(0, n_classes, (n,), generator=gen) if labelled else torch.full((n,), -1)
    return Features(features=feats, logits=head.logits(feats), labels=labels)


def separable() -> tuple[Features, Head, Features, Features]:
    """ID: large activations on a class-specific block; OOD: small, sparse, random."""
    gen = torch.Generator().manual_seed(0)
    n_classes, block = 4, 16
    n_dims = n_classes * block
    weight = torch.zeros(n_classes, n_dims)
    for c in range(n_classes):
        weight[c, c * block : (c + 1) * block] = 1 / block
    head = Head(weight=weight, bias=torch.zeros(n_classes))

    def id_set(n: int) -> Features:
        labels = torch.randint(0, n_classes, (n,), generator=gen)
        feats = (10 * weight[labels] * block + torch.randn(n, n_dims, generator=gen)).relu()
        return Features(feats, head.logits(feats), labels)

    ood = (0.5 * torch.randn(300, n_dims, generator=gen)).relu()
    return id_set(400), head, id_set(300), Features(ood, head.logits(ood), torch.full((300,), -1))
