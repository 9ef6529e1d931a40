"""Extraction settings: the "auto" batch size, the config keys, and the cache's amp key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from oodbench import extract
from oodbench.data import ImageArray, Preprocess
from oodbench.extract import FeatureCache, activation_bytes, auto_batch_size, data_fingerprint
from oodbench.models import create_model

PRE = Preprocess(28, 1, (0.3,), (0.3,))
CPU = torch.device("cpu")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", 10, 1, widths=(8, 8, 16))


def test_activation_bytes_counts_every_layer_output() -> None:
    # stem conv + bn (8 x 28 x 28 each) alone exceed this; the sum is a few hundred KB
    per_image = activation_bytes(_model(), PRE, CPU)
    assert 2 * 8 * 28 * 28 * 4 < per_image < 2_000_000


@pytest.mark.parametrize(("free", "expected"), [(10**13, 512), (1, 16)])
def test_auto_batch_size_is_capped_and_floored(monkeypatch: pytest.MonkeyPatch, free: int,
                                               expected: int) -> None:
    monkeypatch.setattr(extract, "available_memory", lambda device: free)
    assert auto_batch_size(_model(), PRE, CPU) == expected


def test_auto_batch_size_fits_the_memory_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    per_image = activation_bytes(model, PRE, CPU)
    free = per_image * 300  # a quarter of it holds 75 images: the batch is 64
    monkeypatch.setattr(extract, "available_memory", lambda device: free)
    batch = auto_batch_size(model, PRE, CPU)
    assert batch == 64
    assert batch * per_image <= extract.MEMORY_FRACTION * free < 2 * batch * per_image


def test_available_memory_is_positive() -> None:
    assert extract.available_memory(CPU) > 0


def test_auto_batch_cache_records_the_choice_and_keys_amp_entries(tmp_path: Path) -> None:
    arr = ImageArray(np.zeros((3, 28, 28, 1), np.uint8), np.zeros(3, np.int64), "x", "test", "")
    cache = FeatureCache(tmp_path)
    feats = cache.get(_model(), "c" * 16, arr, PRE, CPU, "auto")
    assert feats.features.shape == (3, 16)
    record = cache.extraction["cpu"]
    assert record["setting"] == "auto" and record["amp"] is False
    assert record["batch_size"] in {2**i for i in range(4, 10)}
    # entries made under autocast (CUDA only) never stand in for float32 ones
    assert cache.path("c" * 16, arr, PRE, amp=True) != cache.path("c" * 16, arr, PRE)


def test_fingerprint_is_computed_once_per_array(monkeypatch: pytest.MonkeyPatch) -> None:
    arr = ImageArray(np.ones((2, 4, 4, 1), np.uint8), np.zeros(2, np.int64), "x", "test", "")
    first = data_fingerprint(arr)
    monkeypatch.setattr(extract.hashlib, "sha256", None)  # any recomputation would fail
    assert data_fingerprint(arr) == first
