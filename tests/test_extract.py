"""Extraction settings: the "auto" batch size, the config keys, and the cache's amp key."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from oodbench import extract
from oodbench.data import ImageArray, Preprocess
from oodbench.extract import FeatureCache, activation_bytes, auto_batch_size
from oodbench.models import create_model
from oodbench.scoring import Head, create_scorer

PRE = Preprocess(28, 1, (0.3,), (0.3,))
CPU = torch.device("cpu")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", 10, 1, widths=(8, 8, 16))


def test_activation_bytes_counts_every_layer_output() -> None:
    # the stem conv and its batch norm (8 x 28 x 28 float32 each) alone exceed 2 x 25 KB
    total, largest = activation_bytes(_model(), PRE, CPU)
    assert 2 * 8 * 28 * 28 * 4 < total < 2_000_000
    # the largest layer reads and writes 8 x 28 x 28 floats (the 1-channel input is smaller)
    assert largest == 2 * 8 * 28 * 28 * 4


@pytest.mark.parametrize(("free", "cache", "expected"),
                         [(10**13, 10**13, 512), (1, 10**13, 16), (10**13, 1, 16)])
def test_auto_batch_size_is_capped_and_floored(monkeypatch: pytest.MonkeyPatch, free: int,
                                               cache: int, expected: int) -> None:
    monkeypatch.setattr(extract, "available_memory", lambda device: free)
    monkeypatch.setattr(extract, "last_level_cache", lambda: cache)
    assert auto_batch_size(_model(), PRE, CPU) == expected


def test_auto_batch_size_fits_memory_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    total, largest = activation_bytes(model, PRE, CPU)
    monkeypatch.setattr(extract, "last_level_cache", lambda: 10**13)
    free = total * 300  # a quarter of it holds 75 images: the batch is 64
    monkeypatch.setattr(extract, "available_memory", lambda device: free)
    batch = auto_batch_size(model, PRE, CPU)
    assert batch == 64
    assert batch * total <= extract.MEMORY_FRACTION * free < 2 * batch * total
    # on the CPU the cache binds too: half of it holds the largest layer of 40 images -> 32
    monkeypatch.setattr(extract, "last_level_cache", lambda: largest * 80)
    assert auto_batch_size(model, PRE, CPU) == 32


def test_last_level_cache_reads_a_size() -> None:
    assert extract.last_level_cache() >= 2**16


def test_available_memory_is_positive() -> None:
    assert extract.available_memory(CPU) > 0


@pytest.mark.kernels
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
    hashes: list[object] = []
    sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *data: hashes.append(data) or sha256(*data))
    first = arr.fingerprint()
    assert len(hashes) == 1
    assert arr.fingerprint() == first and len(hashes) == 1  # kept, not hashed again
    # a copy is a new set: it hashes its own images once
    assert dataclasses.replace(arr).fingerprint() == first and len(hashes) == 2


@pytest.mark.kernels
def test_auto_batch_leaves_the_model_usable_for_gradient_scorers(tmp_path: Path) -> None:
    arr = ImageArray(np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), np.uint8),
                     np.zeros(5, np.int64), "x", "test", "")
    model = _model()  # fresh: its weights are converted to channels-last on first use
    cache = FeatureCache(tmp_path)
    train = cache.get(model, "c" * 16, arr, PRE, CPU, "auto")
    odin = create_scorer("odin").fit(train, Head(model.fc.weight.detach(), model.fc.bias.detach()))
    scores = cache.scores(model, "c" * 16, odin, arr, PRE, CPU, "auto")
    assert scores.shape == (5,) and np.isfinite(scores).all()
    assert not any(p.is_inference() for p in model.parameters())


def test_a_pass_reports_each_batch_to_its_progress_callback() -> None:
    arr = ImageArray(np.zeros((10, 28, 28, 1), np.uint8), np.zeros(10, np.int64), "x", "test", "")
    calls: list[tuple[object, ...]] = []
    FeatureCache(None).get(_model(), "c" * 16, arr, PRE, CPU, 4,
                           progress=lambda *report: calls.append(report))
    assert calls == [("extract x/test", done, 10) for done in (0, 4, 8, 10)]
