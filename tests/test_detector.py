"""oodbench.Detector: the same scores as the pipeline's functions, a safetensors + JSON round
trip that is exact, and refusals of another model or a broken folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import oodbench
from oodbench.data import ImageArray, Preprocess
from oodbench.detector import META_FILE, STATE_FILE, Detector
from oodbench.errors import CheckpointError, ConfigError
from oodbench.extract import forward_features, model_scores
from oodbench.models import create_model
from oodbench.scoring import (
    Head,
    MapScorer,
    ModelScorer,
    create_scorer,
    fit_and_score,
    list_scorers,
)

CPU = torch.device("cpu")
PRE = Preprocess(28, 1, (0.3,), (0.25,))
N_TRAIN, N_NEW = 64, 16
# the bank samplers' k must fit the 64-image bank; every other scorer keeps its defaults
PARAMS: dict[str, dict[str, Any]] = {"knn": {"k": 10}, "nnguide": {"k": 10}}


def _images(n: int, seed: int, shape: tuple[int, ...] = (28, 28, 1)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _nearest_prototype_model(train: np.ndarray) -> tuple[nn.Module, np.ndarray]:
    """A random resnet8 whose head is the nearest-prototype classifier of 10 training images'
    features (logit_k = |f|^2 - |f - p_k|^2), so each class is predicted (SHE needs a correct
    sample of every class); and the training labels, its predictions."""
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1, widths=(4, 8, 8))
    feats = forward_features(model, _array(train, np.zeros(len(train), np.int64)), PRE, CPU)
    protos = feats.features[:10].double()
    with torch.no_grad():
        model.fc.weight.copy_(2 * protos)
        model.fc.bias.copy_(-(protos**2).sum(dim=1))
    labels = model.fc(feats.features).argmax(dim=1).numpy()
    assert len(set(labels.tolist())) == 10
    return model, labels


def _array(images: np.ndarray, labels: np.ndarray) -> ImageArray:
    return ImageArray(images, labels, "random", "train", "test")


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    train, new = _images(N_TRAIN, 1), _images(N_NEW, 2)
    model, labels = _nearest_prototype_model(train)
    return {"model": model, "train": train, "labels": labels, "new": new,
            "x": PRE(train), "y": torch.as_tensor(labels), "x_new": PRE(new)}


def _pipeline_scores(setup: dict[str, Any], name: str) -> np.ndarray:
    """The pipeline's path: cached-pass features of the uint8 images, then fit_and_score (a
    model scorer by model_scores over the images)."""
    model = setup["model"]
    train_arr = _array(setup["train"], setup["labels"])
    new_arr = _array(setup["new"], np.full(N_NEW, -1))
    scorer = create_scorer(name, **PARAMS.get(name, {}))
    score_set = (lambda _: model_scores(model, scorer, new_arr, PRE, CPU)) \
        if isinstance(scorer, ModelScorer) else None
    reduce = scorer.reduce if isinstance(scorer, MapScorer) else None  # its own pass
    sets = {"new": forward_features(model, new_arr, PRE, CPU, reduce=reduce)}
    train = forward_features(model, train_arr, PRE, CPU, reduce=reduce)
    return fit_and_score(scorer, train, Head.from_linear(model.fc), sets, score_set)["new"]


def _detector(setup: dict[str, Any], name: str) -> Detector:
    det = Detector(setup["model"], name, pixel_std=PRE.std, **PARAMS.get(name, {}))
    return det.fit(TensorDataset(setup["x"], setup["y"]), device="cpu")


def test_detector_is_exported() -> None:
    assert oodbench.Detector is Detector


@pytest.mark.parametrize("name", list_scorers())
def test_detector_scores_equal_the_pipeline_and_survive_a_round_trip(
        setup: dict[str, Any], name: str, tmp_path: Path) -> None:
    model = setup["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    det = _detector(setup, name)
    scores = det(setup["x_new"])
    assert scores.dtype == np.float64 and scores.shape == (N_NEW,)
    np.testing.assert_allclose(scores, _pipeline_scores(setup, name), rtol=1e-5, atol=1e-5)

    det.save(tmp_path)
    assert {p.suffix for p in tmp_path.iterdir()} <= {".safetensors", ".json"}
    assert {p.name for p in tmp_path.iterdir()} == {STATE_FILE, META_FILE}
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["scorer"] == name and meta["params"] == det.scorer.get_params()
    assert meta["versions"]["oodbench"]
    loaded = Detector.load(tmp_path, model, device="cpu")
    np.testing.assert_array_equal(loaded(setup["x_new"]), scores)

    assert model.training  # the user's model: mode and weights as they were
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.eval()


def test_fit_takes_a_dataloader_or_a_tensor_pair(setup: dict[str, Any]) -> None:
    want = _detector(setup, "mahalanobis")(setup["x_new"])
    loader = DataLoader(TensorDataset(setup["x"], setup["y"]), batch_size=16)
    for data in (loader, (setup["x"], setup["y"])):
        det = Detector(setup["model"], "mahalanobis").fit(data, batch_size=16, device="cpu")
        np.testing.assert_allclose(det(setup["x_new"]), want, rtol=1e-5, atol=1e-5)


def test_unknown_scorer_or_parameter_is_a_config_error(setup: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="did you mean 'knn'"):
        Detector(setup["model"], "knnn")
    with pytest.raises(ConfigError, match="unknown parameter"):
        Detector(setup["model"], "knn", kk=3)
    with pytest.raises(ConfigError, match="refused by scorer 'knn'"):
        Detector(setup["model"], "knn", k=0)
    with pytest.raises(ConfigError, match="pixel_std"):
        Detector(setup["model"], "odin")
    with pytest.raises(RuntimeError, match="not fitted"):
        Detector(setup["model"], "msp")(setup["x_new"])


@pytest.fixture
def saved(setup: dict[str, Any], tmp_path: Path) -> Path:
    return _detector(setup, "knn").save(tmp_path / "det")


def test_load_refuses_a_model_with_other_weights(setup: dict[str, Any], saved: Path) -> None:
    other = create_model("resnet8", 10, 1, widths=(4, 8, 8))
    with pytest.raises(CheckpointError, match=f"{META_FILE}.*other weights"):
        Detector.load(saved, other)


@pytest.mark.parametrize("broken", ["truncated", "flipped", "missing"])
def test_load_refuses_a_broken_safetensors_file(setup: dict[str, Any], saved: Path,
                                                broken: str) -> None:
    path = saved / STATE_FILE
    data = path.read_bytes()
    if broken == "missing":
        path.unlink()
    else:
        path.write_bytes(data[: len(data) // 2] if broken == "truncated"
                         else data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=STATE_FILE):
        Detector.load(saved, setup["model"])


@pytest.mark.parametrize("edit", ["not json", "no scorer", "unknown scorer", "missing"])
def test_load_refuses_a_broken_json_file(setup: dict[str, Any], saved: Path, edit: str) -> None:
    path = saved / META_FILE
    meta = json.loads(path.read_text())
    if edit == "missing":
        path.unlink()
    elif edit == "not json":
        path.write_text(path.read_text()[:-10])
    else:
        del meta["scorer"]
        if edit == "unknown scorer":
            meta["scorer"] = "no-such-scorer"
        path.write_text(json.dumps(meta))
    error = ConfigError if edit == "unknown scorer" else CheckpointError
    with pytest.raises(error, match=META_FILE):
        Detector.load(saved, setup["model"])


def test_fitted_state_round_trips_every_fitted_attribute(setup: dict[str, Any]) -> None:
    det = _detector(setup, "vim")
    state = det.scorer.fitted_state()
    assert set(state) == {"head_.weight", "head_.bias", "origin_", "residual_basis_", "alpha_"}
    fresh = create_scorer("vim").load_fitted_state(state)
    assert fresh.alpha_ == det.scorer.alpha_ and fresh.head_ is not None
    assert torch.equal(fresh.head_.weight, det.scorer.head_.weight)
    with pytest.raises(ValueError, match="names no fitted attribute"):
        fresh.load_fitted_state({"dim": 3})


def test_fitted_state_refuses_an_attribute_its_class_does_not_declare() -> None:
    scorer = create_scorer("energy")
    scorer.mean_ = torch.zeros(3)  # set by a fit, but not declared on the class
    with pytest.raises(TypeError, match="fitted attribute 'mean_' is not declared on its "
                                        "class; declare it there with the default None"):
        scorer.fitted_state()


@pytest.mark.parametrize("name", ["energy", "knn"])
def test_detector_takes_a_timm_model(name: str, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    config = oodbench.adapt(model).preprocess_config  # a ConfigError here fails the test
    assert config is not None
    pre = Preprocess(32, 3, config.mean, config.std)
    x, y = pre(_images(12, 3, (32, 32, 3))), torch.arange(12) % 10
    det = Detector(model, name, **({"k": 3} if name == "knn" else {})).fit((x, y), device="cpu")
    scores = det(pre(_images(4, 4, (32, 32, 3))))
    assert scores.shape == (4,) and np.isfinite(scores).all()
    loaded = Detector.load(det.save(tmp_path), model, device="cpu")
    np.testing.assert_array_equal(loaded(pre(_images(4, 4, (32, 32, 3)))), scores)


def _edit(folder: Path, scorer: str | None = None, params: dict[str, Any] | None = None,
          fitted: dict[str, Any] | None = None,
          arrays: dict[str, torch.Tensor] | None = None) -> None:
    """Rewrite a saved detector as a user might: another scorer name, parameters or fitted
    values in detector.json, or other arrays in scorer.safetensors (with its hash updated)."""
    meta_path, state_path = folder / META_FILE, folder / STATE_FILE
    meta = json.loads(meta_path.read_text())
    if scorer is not None:
        meta["scorer"], meta["params"] = scorer, {}
    meta["params"] |= params or {}
    meta["fitted"] |= fitted or {}
    if arrays is not None:
        state = safetensors.torch.load(state_path.read_bytes()) | arrays
        data = safetensors.torch.save(state)
        state_path.write_bytes(data)
        meta["sha256"][STATE_FILE] = hashlib.sha256(data).hexdigest()
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(("saved_as", "edit", "reason"), [
    ("knn", {"scorer": "mahalanobis"},
     "scorer 'mahalanobis': 'bank_' names no fitted attribute of it (it has head_, means_, "
     "precision_); is the state another scorer's?"),
    ("energy", {"scorer": "knn", "params": {"k": 10}},
     "scorer 'knn': the fitted state lacks bank_; is it another scorer's?"),
    ("knn", {"arrays": {"bank_": torch.ones(64, 5)}},
     "knn: the fitted bank_ is torch.float32 of shape (64, 5); this model needs torch.float32 "
     "rows of 8 features"),
    ("knn", {"arrays": {"bank_": torch.ones(64, 8, dtype=torch.float64)}},
     "knn: the fitted bank_ is torch.float64 of shape (64, 8); this model needs torch.float32 "
     "rows of 8 features"),
    ("knn", {"params": {"k": 100}}, "knn: k=100 exceeds the fitted bank_ of 64 samples"),
    ("knn", {"arrays": {"head_.weight": torch.ones(10, 8, dtype=torch.float16)}},
     "scorer 'knn': fitted head_.weight is torch.float16, not torch.float32"),
    ("react", {"fitted": {"threshold_": "0.5"}},
     "scorer 'react': fitted attribute 'threshold_' is a str, not a float or int"),
    ("mahalanobis", {"arrays": {"means_": torch.ones(10, 5, dtype=torch.float64)}},
     "scoring 8-dimensional features with it raises RuntimeError: "),
], ids=["another-scorer", "missing-bank", "bank-width", "bank-dtype", "k-above-bank",
        "head-dtype", "json-type", "scoring-probe"])
def test_load_refuses_a_state_that_does_not_fit_the_scorer_or_model(
        setup: dict[str, Any], tmp_path: Path, saved_as: str, edit: dict[str, Any],
        reason: str) -> None:
    folder = _detector(setup, saved_as).save(tmp_path / "det")
    _edit(folder, **edit)
    name = edit.get("scorer", saved_as)
    with pytest.raises(CheckpointError) as info:
        Detector.load(folder, setup["model"])
    assert info.value.message.startswith(
        f"{folder / STATE_FILE} does not fit scorer {name!r}: {reason}")
    assert info.value.hint == "save the detector again"
