"""Scorers cannot change each other's numbers, and every number says when its inputs were bad:
a plug-in that writes to the shared features, logits, labels or head fails by name while the
other scorers score what was extracted; non-finite logits fail ID accuracy with their count;
scores coarser than float32 are refused by dtype; scores near ±float64 max are plotted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from oodbench import plugins
from oodbench.metrics import ID_ACC, accuracy, nonfinite_note
from oodbench.models import create_model
from oodbench.pipeline import evaluate, recorded_rows
from oodbench.scoring import (
    Features,
    Head,
    InputsChanged,
    Scorer,
    ScorerFailed,
    fit_and_score,
)

VICTIMS = ["knn", "mahalanobis", "energy"]
PLUGIN = '''
import numpy as np
import torch
from oodbench.scoring import Scorer, register_scorer, to_scores


@register_scorer("flip-in-fit")
class FlipInFit(Scorer):
    def fit(self, train, head):
        train.features.mul_(-1)
        return super().fit(train, head)

    def score(self, data):
        return to_scores(data.logits.amax(dim=1))


@register_scorer("zero-in-score")
class ZeroInScore(Scorer):
    def score(self, data):
        out = to_scores(data.logits.amax(dim=1))
        data.features.zero_()
        data.logits.zero_()
        return out


@register_scorer("float16")
class Float16(Scorer):
    def score(self, data):
        return data.logits.amax(dim=1).half()


@register_scorer("huge")
class Huge(Scorer):
    def score(self, data):
        out = np.full(len(data), 1e308)
        out[data.labels.numpy() < 0] = -1e308  # OOD rows: -1e308
        return out
'''


@pytest.fixture(autouse=True)
def plugin(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "evil.py"
    path.write_text(PLUGIN)
    with plugins.scoped():
        plugins.load_plugin_file(path)
        yield path


def _data(n: int, seed: int, labelled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    return images, (np.arange(n) % 10 if labelled else np.full(n, -1))


def _model(nan_bias: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1, widths=(4, 4, 8))
    if nan_bias:
        with torch.no_grad():
            model.fc.bias[3] = float("nan")
    return model


def _evaluate(scorers: list[str], model: nn.Module | None = None, **kwargs: Any) -> pd.DataFrame:
    """``evaluate`` on 80 ID-train, 40 ID-test and 40 OOD images, in one batch each."""
    return evaluate(model or _model(), "fmnist", id_train=_data(80, 1), id_test=_data(40, 2),
                    ood={"noise": _data(40, 3, labelled=False)}, scorers=scorers,
                    extract_batch=128, **kwargs)


def _cells(df: pd.DataFrame, scorers: list[str]) -> pd.DataFrame:
    rows = df[df["scorer"].isin(scorers)]
    return rows.sort_values(["scorer", "metric"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def alone() -> pd.DataFrame:
    """The built-in scorers' rows without a plug-in."""
    return _cells(_evaluate(VICTIMS), VICTIMS)


WROTE = {"flip-in-fit": "ID-train features",
         "zero-in-score": "'id' features, 'id' logits, 'noise' features, 'noise' logits"}


# the plug-in that writes in fit is run without a cache (the inputs are extracted again), the
# one that writes in score with one (they are read back from it)
@pytest.mark.parametrize(("offender", "cached"), [("flip-in-fit", False),
                                                  ("zero-in-score", True)])
def test_a_scorer_that_writes_its_inputs_fails_and_changes_no_other(
        offender: str, cached: bool, alone: pd.DataFrame, tmp_path: Path) -> None:
    cache = {"cache_dir": tmp_path / "cache"} if cached else {}
    df = _evaluate([offender, *VICTIMS], **cache)
    pd.testing.assert_frame_equal(_cells(df, VICTIMS), alone)
    failed = df[df["scorer"] == offender]
    assert failed["value"].isna().all()
    assert failed["note"].str.startswith(f"InputsChanged: scorer '{offender}' (").all()
    assert failed["note"].str.contains(f"evil.py)) wrote to the inputs it shares with the other "
                                       f"scorers ({WROTE[offender]})", regex=False).all()
    assert failed["note"].str.endswith("the other scorers get them as extracted").all()


class _Writes(Scorer):
    """Writes where ``how`` says (bypassing torch's version counters where it can), then
    optionally raises."""

    name = "writes"

    def __init__(self, how: str = "numpy", then_raise: bool = False) -> None:
        self.how, self.then_raise = how, then_raise

    def fit(self, train: Features, head: Head) -> _Writes:
        if self.how == "numpy":
            train.features.numpy()[0, 0] += 1  # no in-place torch op: only the bytes tell
        elif self.how == "head":
            head.weight.data[0, 0] = 7.0
        elif self.how == "labels":
            train.labels[:] = 0
        elif self.how == "transpose":
            train.features.t_()  # the same bytes, another layout
        if self.then_raise:
            raise ZeroDivisionError("after writing")
        return super().fit(train, head)

    def score(self, data: Features) -> np.ndarray:
        return data.logits.amax(dim=1).double().numpy()


def _problem() -> tuple[Features, Head, dict[str, Features]]:
    gen = torch.Generator().manual_seed(0)
    head = Head(torch.randn(3, 4, generator=gen), torch.randn(3, generator=gen))
    feats = torch.rand(12, 4, generator=gen)
    train = Features(feats, head.logits(feats), torch.arange(12) % 3)
    return train, head, {"test": Features(feats[:5].clone(), head.logits(feats[:5]),
                                          torch.arange(5) % 3)}


@pytest.mark.parametrize(("how", "what"), [("numpy", "ID-train features"),
                                           ("head", "head weight"),
                                           ("labels", "ID-train labels"),
                                           ("transpose", "ID-train features")])
@pytest.mark.parametrize("then_raise", [False, True])
def test_fit_and_score_names_whatever_a_scorer_wrote(how: str, what: str,
                                                     then_raise: bool) -> None:
    train, head, sets = _problem()
    with pytest.raises(InputsChanged) as info:
        fit_and_score(_Writes(how, then_raise), train, head, sets)
    assert not isinstance(info.value, ScorerFailed)  # not a cell to skip: the inputs changed
    assert f"wrote to the inputs it shares with the other scorers ({what})" in info.value.reason
    assert ("it also failed: ZeroDivisionError: after writing" in info.value.reason) == then_raise


def test_a_scorer_that_writes_nothing_passes_and_the_head_is_a_copy() -> None:
    train, head, sets = _problem()
    assert set(fit_and_score(_Writes("none"), train, head, sets)) == {"test"}
    fc = nn.Linear(4, 3)
    Head.from_linear(fc).weight.mul_(0)
    assert fc.weight.abs().sum() > 0  # a scorer writing its head leaves the model alone


def test_non_finite_logits_fail_id_accuracy_with_their_count() -> None:
    df = _evaluate(["msp", "knn"], model=_model(nan_bias=True))
    acc = df[df["metric"] == ID_ACC].iloc[0]
    assert np.isnan(acc["value"])
    assert acc["note"] == ("40 of 40 samples of ID test set 'id' have non-finite (NaN/inf) "
                           "logits, which have no argmax: the model's outputs are broken")
    assert df.loc[df["scorer"] == "knn", "value"].notna().all()  # features are fine
    logits = torch.tensor([[0.0, 1.0], [float("inf"), 0.0], [0.0, 2.0]])
    assert nonfinite_note(logits, "x").startswith("1 of 3 samples of x have non-finite")
    with pytest.raises(ValueError, match="accuracy: 1 of 3 samples of the logits"):
        accuracy(logits, torch.tensor([1, 0, 1]))
    assert accuracy(logits[[0, 2]], torch.tensor([1, 1])) == 1.0


def test_ablate_rows_of_training_records_do_not_carry_a_failed_id_acc_note() -> None:
    """``ablate`` shapes its ``test_acc`` (and diagnostics) rows as the ``id_acc`` row: a
    failed ``id_acc``'s note would be copied onto numbers recorded in training."""
    df = _evaluate(["msp"], model=_model(nan_bias=True))
    acc = df[df["metric"] == ID_ACC].iloc[0].to_dict()
    assert acc["note"]
    rows = recorded_rows(acc, {"test_acc": 0.9, "diagnostics": {"bg_ratio": 0.5}})
    assert [(r["metric"], r["value"], r["note"]) for r in rows] == [
        ("test_acc", 0.9, ""), ("bg_ratio", 0.5, "")]
    assert all(r["training"] == acc["training"] and r["seed"] == acc["seed"] for r in rows)


class _Returns(Scorer):
    name = "returns"

    def __init__(self, kind: Any = None) -> None:
        self.kind = kind

    def score(self, data: Features) -> Any:
        values = data.logits.amax(dim=1)
        if isinstance(self.kind, torch.dtype):
            return values.to(self.kind)
        return values.numpy().astype(self.kind)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int8, torch.bool,
                                   np.float16, np.uint8, np.int16, np.complex128], ids=str)
def test_scores_coarser_than_float32_are_refused_with_their_dtype(dtype: Any) -> None:
    train, head, sets = _problem()
    with pytest.raises(ScorerFailed) as info:
        fit_and_score(_Returns(dtype), train, head, sets)
    assert info.value.reason.startswith(
        f"ScorerFailed: scorer 'returns' ({__name__}._Returns ({__file__})) returned "
        f"{dtype if isinstance(dtype, torch.dtype) else np.dtype(dtype)} scores on 'test': ")
    assert info.value.reason.endswith("return float32 or float64 scores "
                                      "(oodbench.scoring.to_scores)")


@pytest.mark.parametrize("dtype", [np.str_, object], ids=str)
def test_scores_that_are_not_numbers_are_refused(dtype: Any) -> None:
    """Text scores ("0.5") or an object array (of float16 values, say) were converted to
    float64 without a word."""
    train, head, sets = _problem()
    with pytest.raises(ScorerFailed, match=r"returned .* scores on 'test': scores must be "
                       r"numbers \(not text, objects"):
        fit_and_score(_Returns(dtype), train, head, sets)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32, np.int64,
                                   np.float32], ids=str)
def test_float32_and_wider_scores_and_whole_numbers_are_kept(dtype: Any) -> None:
    train, head, sets = _problem()
    out = fit_and_score(_Returns(dtype), train, head, sets)["test"]
    assert out.dtype == np.float64 and out.shape == (5,)


def test_a_float16_plugin_is_a_failed_cell_naming_it() -> None:
    df = _evaluate(["float16", "energy"])
    failed = df[df["scorer"] == "float16"]
    assert failed["value"].isna().all()
    assert failed["note"].str.contains("returned torch.float16 scores on 'id': "
                                       "torch.float16 holds fewer distinct values than float32",
                                       regex=False).all()
    assert df.loc[df["scorer"] == "energy", "value"].notna().all()


def test_scores_near_float64_max_are_scored_and_plotted(tmp_path: Path) -> None:
    df = _evaluate(["huge", "energy"], out_dir=tmp_path / "out")
    huge = df[df["scorer"] == "huge"].set_index("metric")["value"]
    assert huge["auroc"] == 1.0 and huge["fpr95"] == 0.0
    plots = tmp_path / "out" / "eval-model" / "plots"
    assert (plots / "hist_huge.png").is_file() and (plots / "roc_huge.png").is_file()
