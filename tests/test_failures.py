"""Bad input: each case ends in one clear ``error:`` paragraph (or a marked cell), exit 1, no
traceback unless ``--debug``, and nothing half-written on disk (README, "Failure modes")."""

import gzip
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from oodbench import cli, plugins
from oodbench.checkpoint import save_checkpoint
from oodbench.config import ConfigError
from oodbench.data.preprocess import conversion_note
from oodbench.models import create_model
from oodbench.objectives import BackgroundNorm
from tests.conftest import (
    FAST_CONFIG,
    encode_jpegs,
    random_images,
    write_image_folder,
    write_npz,
)

NAN_SCORERS = '''
import numpy as np

from oodbench.scoring import Features, Scorer, register_scorer


@register_scorer("nan-scorer")
class NaNScorer(Scorer):
    def score(self, data: Features) -> np.ndarray:
        return np.full(len(data), np.nan)


@register_scorer("short-scorer")
class ShortScorer(Scorer):
    def score(self, data: Features) -> np.ndarray:
        return np.zeros(len(data) - 1)
'''


@pytest.fixture
def tb(tiny_bench: SimpleNamespace) -> SimpleNamespace:
    """``tiny_bench``'s data with the fast config; ``edit(old, new)`` rewrites the config."""
    tiny_bench.config.write_text(FAST_CONFIG)

    def edit(old: str, new: str) -> None:
        text = tiny_bench.config.read_text()
        assert old in text
        tiny_bench.config.write_text(text.replace(old, new, 1))

    tiny_bench.edit = edit
    return tiny_bench


@pytest.fixture(autouse=True)
def isolated_registry() -> Iterator[None]:
    """Plugins registered from files in these tests do not outlive them."""
    with plugins.scoped():
        yield


def run_cli(tb: SimpleNamespace, capsys: pytest.CaptureFixture, command: str, *extra: str,
            data_root: Path | None = None) -> tuple[int, str]:
    """Run ``oodbench COMMAND`` on the tiny benchmark; (exit code, stderr as one line)."""
    args = [command, "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
            str(data_root or tb.root), "--runs-dir", str(tb.runs), "--device", "cpu"]
    if command in ("run", "eval") and "--out" not in extra:
        args += ["--out", str(tb.out)]
    code = cli.main([*args, *extra])
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    return code, err


def written(folder: Path) -> list[Path]:
    """Files below ``folder``, less the empty lock file a run holds on its output folder."""
    return [p for p in folder.rglob("*") if p.is_file()
            and not (p.name.startswith(".") and p.name.endswith(".lock") and not p.stat().st_size)]


def assert_failed_cleanly(tb: SimpleNamespace, code: int, err: str, *needles: str) -> None:
    """Exit 1, one ``error:`` message holding every needle, and no output or temp file."""
    assert code == 1
    assert err.count("error:") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not written(tb.out) and not written(tb.runs)
    assert not [p for p in tb.config.parent.rglob("*") if p.name.endswith(".tmp")]


# --- 1. config file ---------------------------------------------------------------------


def test_malformed_toml(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    tb.config.write_text('[benchmarks.tiny]\nid = "fashion-mnist\n')
    code, err = run_cli(tb, capsys, "run")
    assert_failed_cleanly(tb, code, err, str(tb.config), "not valid TOML", "line 2",
                          "fix the syntax")


# --- 2. unknown names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        (None, None, ("no benchmark 'tinny'", "did you mean 'tiny'?")),
        ('id = "fashion-mnist"', 'id = "fashion-mnst"',
         ("[benchmarks.tiny] id = 'fashion-mnst'", "did you mean 'fashion-mnist'?")),
        ('name = "mnist"', 'name = "mnits"',
         ("[benchmarks.tiny.ood[0]] name = 'mnits'", "did you mean 'mnist'?")),
        ('objective = "bgnorm"', 'objective = "bgnrom"',
         ("objective = 'bgnrom' is not accepted", "did you mean 'bgnorm'?")),
        ('scorers = ["msp", "knn"]', 'scorers = ["msp", "kmn"]',
         ("[benchmarks.tiny] scorers: unknown scorer 'kmn'", "did you mean 'knn'?")),
        ("epochs = 1", "epoch = 1",
         ("unknown key 'epoch' in [benchmarks.tiny.train]", "did you mean 'epochs'?")),
    ],
    ids=["benchmark", "dataset", "ood-dataset", "objective", "scorer-in-config", "config-key"],
)
def test_unknown_names_suggest_the_close_one(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, old: str | None, new: str | None,
    needles: tuple[str, ...],
) -> None:
    if old is None:
        code = cli.main(["run", "--benchmark", "tinny", "--config", str(tb.config),
                         "--runs-dir", str(tb.runs), "--out", str(tb.out)])
        err = " ".join(capsys.readouterr().err.split())
    else:
        tb.edit(old, new)
        code, err = run_cli(tb, capsys, "run")
        assert str(tb.config) in err
    assert_failed_cleanly(tb, code, err, *needles)


def test_unknown_scorer_option(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    code, err = run_cli(tb, capsys, "run", "--scorers", "msp,enrgy")
    assert_failed_cleanly(tb, code, err, "--scorers: unknown scorer 'enrgy'",
                          "did you mean 'energy'?", "available:")


# --- 3. wrong type or out of range ------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("lam = 0.2,", "lam = -0.5,",
         ("[benchmarks.tiny.trainings[1].params] objective 'bgnorm'", "lam must be finite and >= 0",
          "fix that value")),
        ("lam = 0.2,", "lam = 0.2, q = 1.5,",
         ("[benchmarks.tiny.trainings[1].params]", "q must lie in (0, 1), got 1.5")),
        ("lam = 0.2,", 'lam = "big",',
         ("[benchmarks.tiny.trainings[1].params]", "objective 'bgnorm'",
          "lam = 'big' must be of type float")),
        ("batch_size = 64", 'batch_size = "64"',
         ("[benchmarks.tiny.train] batch_size = '64' must be of type int",)),
        ("k = 5", "k = 0",
         ("[benchmarks.tiny.scorer_params] knn = {'k': 0}", "k, chunk_size and bank_chunk_size "
          "must be >= 1", "fix that value")),
        ("k = 5", "kk = 5",
         ("[benchmarks.tiny.scorer_params] knn", "unknown parameter(s) kk; accepted: k")),
    ],
    ids=["negative-lam", "q-above-1", "lam-string", "batch-size-string", "knn-k-0",
         "knn-unknown-param"],
)
def test_bad_values_are_refused_before_training(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, old: str, new: str,
    needles: tuple[str, ...],
) -> None:
    tb.edit(old, new)
    code, err = run_cli(tb, capsys, "run")
    assert_failed_cleanly(tb, code, err, str(tb.config), *needles)


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("image_size = 28", "image_size = 2048",
         ("[benchmarks.tiny] image_size must lie in [1, 1024], got 2048",)),
        ('name = "bgnorm"', 'name = "../bgnorm"',
         ("[benchmarks.tiny.trainings[1]] name: training name '../bgnorm' is not a safe name",
          "letters, digits")),
        ('scorers = ["msp", "knn"]', 'scorers = ["msp", "knn", "msp"]',
         ("[benchmarks.tiny] scorers: scorer 'msp' is listed twice",)),
        ("scorer_params = { knn = { k = 5 } }", "scorer_params = { knn = { kk = 5 } }",
         ("[benchmarks.tiny.scorer_params] knn", "did you mean 'k'?")),
        ('scorers = ["msp", "knn"]', 'scorers = ["msp", "knn"]\ndevice = "gpu"',
         ("[benchmarks.tiny] device = 'gpu' is not accepted; did you mean 'cpu'?",
          "cuda:N")),
    ],
    ids=["image-size-2048", "unsafe-training-name", "scorer-twice", "scorer-param-key",
         "device-in-file"],
)
def test_config_checks_run_before_training(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, old: str, new: str,
    needles: tuple[str, ...],
) -> None:
    tb.edit(old, new)
    code, err = run_cli(tb, capsys, "train")
    assert_failed_cleanly(tb, code, err, str(tb.config), *needles)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [(("--device", "gpu"), ("--device: 'gpu' is not accepted; did you mean 'cpu'?",
                            "accepted values: auto, cpu, cuda, cuda:N")),
     (("--device", "cuda:x"), ("--device: 'cuda:x' is not accepted",))],
    ids=["gpu", "cuda-x"],
)
def test_bad_device_option_names_the_flag(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, extra: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    code, err = run_cli(tb, capsys, "train", *extra)
    assert_failed_cleanly(tb, code, err, *needles)


def test_bgnorm_rejects_negative_lambda() -> None:
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        BackgroundNorm(lam=-0.1)
    assert BackgroundNorm(lam=0.0).weight(10.0) == 0.0


def test_knn_k_above_the_train_set_marks_its_cells(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    tb.edit("k = 5", "k = 100000")
    code, err = run_cli(tb, capsys, "run")
    assert code == 0
    assert "scorer knn failed" in err and "k=100000 exceeds the bank of 256 samples" in err
    df = pd.read_csv(tb.out / "tiny" / "metrics.csv")
    knn = df[df.scorer == "knn"]
    assert knn.value.isna().all() and knn.note.str.contains("k=100000 exceeds").all()
    assert df[df.scorer == "msp"].value.notna().all()


# --- 4-7. data ----------------------------------------------------------------------------


def test_missing_data_root(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    nope = tb.config.parent / "nope"
    code, err = run_cli(tb, capsys, "run", data_root=nope)
    assert_failed_cleanly(tb, code, err, f"data root {nope} does not exist",
                          "pass --data-root")


def test_empty_data_root_variable(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("OODBENCH_DATA", " ")
    code = cli.main(["list"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and err.count("error:") == 1 and "Traceback" not in err
    assert "$OODBENCH_DATA is set but empty; unset it, or set it to a folder" in err


def test_truncated_or_corrupt_id_set(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    images = tb.root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress((1234).to_bytes(4, "big") + bytes(64)))
    code, err = run_cli(tb, capsys, "run")
    assert_failed_cleanly(tb, code, err, str(images), "idx magic number 1234",
                          "replace or re-download that file")


def _bad_jpeg_npz(path: Path) -> Path:
    good = encode_jpegs(random_images(2, 28, 28, 3, 5))
    blob = good["jpeg_bytes"].tobytes()
    first = int(good["offsets"][1])
    broken = blob[:first] + blob[first:first + 60]  # the second JPEG, cut short
    return write_npz(path, jpeg_bytes=np.frombuffer(broken, dtype=np.uint8),
                     offsets=np.array([0, first, len(broken)], dtype=np.int64))


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (_bad_jpeg_npz, ("bad.npz: image 1: corrupt or truncated image",)),
        (lambda p: write_npz(p, pixels=np.zeros((2, 28, 28), np.uint8)),
         ("bad.npz: has keys ['pixels']; expected 'images'",)),
        (lambda p: write_npz(p, images=np.zeros((2, 28, 28, 4), np.uint8)),
         ("bad.npz: 'images' has shape (2, 28, 28, 4), expected N x H x W x {1,3}",)),
        (lambda p: write_npz(p, images=np.zeros((0, 28, 28, 1), np.uint8)),
         ("OOD set 'bad'", "holds no images", "leave it out")),
    ],
    ids=["bad-jpeg", "missing-keys", "four-channels", "zero-images"],
)
def test_broken_extra_ood_npz(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, make, needles: tuple[str, ...]
) -> None:
    path = make(tb.config.parent / "bad.npz")
    code, err = run_cli(tb, capsys, "run", "--extra-ood", f"bad={path}")
    assert_failed_cleanly(tb, code, err, *needles)


def test_empty_ood_folder(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    empty = tb.config.parent / "EMPTY"
    empty.mkdir()
    code, err = run_cli(tb, capsys, "run", "--extra-ood", f"empty={empty}")
    assert_failed_cleanly(tb, code, err, f"{empty}: holds no image files",
                          "put images there")


def test_other_shapes_are_converted_with_one_note(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    folder = tb.config.parent / "rgb"
    write_image_folder(folder, {"": random_images(12, 32, 32, 3, 6)})
    code, err = run_cli(tb, capsys, "run", "--scorers", "msp", "--extra-ood", f"rgb={folder}")
    assert code == 0
    note = ("note: OOD set 'rgb' is converted to the ID input 28x28x1: RGB to grey (BT.601 "
            "luma); resized from 32x32")
    assert err.count(note) == 1 and err.count("note: OOD set") == 1  # not for mnist
    df = pd.read_csv(tb.out / "tiny" / "metrics.csv")
    assert df[df.ood_set == "rgb"].value.notna().all()


def test_conversion_note() -> None:
    assert conversion_note((28, 28, 1), 28, 1) == ""
    assert conversion_note((28, 28, 1), 32, 3) == (
        "grey copied to RGB; resized from 28x28 (shorter side to 32, bilinear, centre crop)")


# --- 8-10. checkpoints --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "classes", "needles"),
    [
        ("resnet8", 100, ("does not match the model at 'fc.weight'", "shape (100, 8)",
                          "expects (10, 8)", "--num-classes")),
        ("resnet18_32x32", 10, ("does not match the model: missing keys",
                                "saved from another architecture", "--arch")),
    ],
    ids=["classes", "architecture"],
)
def test_checkpoint_of_another_model(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, arch: str, classes: int,
    needles: tuple[str, ...],
) -> None:
    path = tb.config.parent / "other.pt"
    widths = {"widths": (4, 4, 8)} if arch == "resnet8" else {}  # the benchmark's widths
    torch.save(create_model(arch, classes, 1, **widths).state_dict(), path)
    code, err = run_cli(tb, capsys, "eval", "--checkpoint", str(path), "--arch", "resnet8",
                        "--num-classes", "10")
    assert_failed_cleanly(tb, code, err, str(path), *needles)


def test_truncated_checkpoint(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    path = save_checkpoint(tb.config.parent / "m.pt", create_model("resnet8", 10, 1),
                           {"arch": "resnet8", "num_classes": 10, "in_channels": 1})
    path.write_bytes(path.read_bytes()[:1000])
    code, err = run_cli(tb, capsys, "eval", "--checkpoint", str(path))
    assert_failed_cleanly(tb, code, err, str(path), "truncated or not a PyTorch checkpoint",
                          "save or copy it again")


def test_checkpoint_metadata_that_is_not_json_or_a_folder(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    path = save_checkpoint(tb.config.parent / "m.pt", create_model("resnet8", 10, 1),
                           {"arch": "resnet8", "num_classes": 10, "in_channels": 1})
    obj = torch.load(path, weights_only=True)
    torch.save(obj | {"meta": "{not json"}, path)
    code, err = run_cli(tb, capsys, "eval", "--checkpoint", str(path))
    assert_failed_cleanly(tb, code, err, f"{path}: its metadata is not JSON")
    folder = tb.config.parent / "folder.pt"
    folder.mkdir()
    code, err = run_cli(tb, capsys, "eval", "--checkpoint", str(folder))
    assert_failed_cleanly(tb, code, err, f"checkpoint {folder} is a folder, not a file")


class _Payload:
    """Unpickling this would run ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_code_payload_never_runs(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    marker = tb.config.parent / "MARKER"
    path = tb.config.parent / "evil.pt"
    state = create_model("resnet8", 10, 1, widths=(4, 4, 8)).state_dict()
    torch.save({"state_dict": state, "meta": "{}", "x": _Payload(marker)}, path)
    code, err = run_cli(tb, capsys, "eval", "--checkpoint", str(path))
    assert_failed_cleanly(tb, code, err, str(path), "GLOBAL posix.system", "none of it was run",
                          "could not be loaded safely (weights_only=True)")
    assert not marker.exists()


# --- 11-12. scorer plug-ins ---------------------------------------------------------------


def test_scorer_returning_nan_or_wrong_length_marks_its_cells(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    plugin = tb.config.parent / "nan_scorers.py"
    plugin.write_text(NAN_SCORERS)
    code, err = run_cli(tb, capsys, "run", "--scorer-path", str(plugin), "--scorers",
                        "msp,nan-scorer,short-scorer")
    assert code == 0
    assert "scorer nan-scorer failed" in err and "scorer short-scorer failed" in err
    df = pd.read_csv(tb.out / "tiny" / "metrics.csv")
    nan, short = df[df.scorer == "nan-scorer"], df[df.scorer == "short-scorer"]
    assert nan.value.isna().all() and nan.note.str.contains("100 NaN values").all()
    assert short.value.isna().all() and short.note.str.contains("99 scores for 100").all()
    assert df[df.scorer == "msp"].value.notna().all()


CONSTANT_SCORER = '''
import numpy as np

from oodbench.scoring import Features, Scorer, register_scorer


@register_scorer("constant-scorer")
class ConstantScorer(Scorer):
    def score(self, data: Features) -> np.ndarray:
        return np.ones(len(data))
'''


def test_degenerate_scores_are_flagged_not_failed(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    plugin = tb.config.parent / "constant_scorer.py"
    plugin.write_text(CONSTANT_SCORER)
    code, err = run_cli(tb, capsys, "run", "--scorer-path", str(plugin), "--scorers",
                        "msp,constant-scorer")
    assert code == 0 and "failed" not in err
    warning = "100.0% of scores equal (constant)"
    for training in ("ce", "bgnorm"):  # once per checkpoint, naming its OOD sets
        assert err.count(f"warning: scorer constant-scorer gives degenerate scores ({training} "
                         f"s0): mnist: {warning}") == 1
    df = pd.read_csv(tb.out / "tiny" / "metrics.csv")
    flat = df[df.scorer == "constant-scorer"]
    assert len(flat) and (flat.note == f"warning: {warning}").all()
    assert flat[flat.metric == "auroc"].value.eq(0.5).all()  # values kept
    assert df[df.scorer == "msp"].note.isna().all()
    params = json.loads((tb.out / "tiny" / "manifest.json").read_text())["scorer_params"]
    assert params["ce-s0"]["constant-scorer"]["warnings"] == [f"mnist: {warning}"]
    assert "warnings" not in params["ce-s0"]["msp"]
    md = (tb.out / "tiny" / "compat.md").read_text()
    assert "50.00†" in md and f"- CE / constant-scorer on mnist (seed 0): warning: {warning}" in md


HUGE_SCORERS = '''
import numpy as np

from oodbench.scoring import Scorer, register_scorer


@register_scorer("offset-maxlogit")
class OffsetMaxLogit(Scorer):
    def score(self, data):
        return 1e9 + data.logits.max(dim=1).values.double().numpy()


@register_scorer("huge-maxlogit")
class HugeMaxLogit(Scorer):
    def score(self, data):
        return 1e38 * data.logits.max(dim=1).values.double().numpy()  # inf in float32
'''


def test_scores_beyond_float32_keep_their_values_in_files_and_plots(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    plugin = tb.config.parent / "huge.py"
    plugin.write_text(HUGE_SCORERS)
    code, err = run_cli(tb, capsys, "run", "--plugin", str(plugin), "--scorers",
                        "maxlogit,offset-maxlogit,huge-maxlogit")
    assert code == 0 and "failed" not in err
    df = pd.read_csv(tb.out / "tiny" / "metrics.csv")
    auroc = df[(df.metric == "auroc") & (df.training == "ce")].set_index("scorer")["value"]
    assert auroc["offset-maxlogit"] == pytest.approx(auroc["maxlogit"], abs=1e-6)
    assert auroc["huge-maxlogit"] == pytest.approx(auroc["maxlogit"], abs=1e-9)
    with np.load(tb.out / "tiny" / "scores" / "ce-s0.npz") as z:
        offset, huge = z["offset-maxlogit/fashion-mnist"], z["huge-maxlogit/fashion-mnist"]
        assert offset.dtype == np.float64 and len(np.unique(offset)) > 1
        assert np.isfinite(huge).all() and np.abs(huge).max() > 1e37
    assert (tb.out / "tiny" / "plots" / "roc_huge-maxlogit.png").is_file()


def test_scorer_plugin_raising_on_import(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    plugin = tb.config.parent / "broken.py"
    plugin.write_text("raise ImportError('needs faiss')\n")
    code, err = run_cli(tb, capsys, "run", "--scorer-path", str(plugin))
    assert_failed_cleanly(tb, code, err, f"plugin file {plugin} raised on import: ImportError: "
                          "needs faiss", "--plugin")


def test_labels_beyond_num_classes_are_refused_before_training(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    tb.edit("num_classes = 10", "num_classes = 5")
    code, err = run_cli(tb, capsys, "train")
    assert_failed_cleanly(tb, code, err, "has num_classes = 5", "has labels 0 .. 9",
                          "set num_classes = 10 (or more)")


def test_a_hold_out_that_leaves_too_few_to_train_on(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    tb.edit("val_fraction = 0.2", "val_fraction = 0.999")
    code, err = run_cli(tb, capsys, "run")
    assert_failed_cleanly(tb, code, err, "val_fraction = 0.999 of the 320 ID-train images",
                          "leaves 0 to train on", "lower val_fraction")


def test_a_diverging_training_stops_and_saves_nothing(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    tb.edit("batch_size = 64", "batch_size = 64\nlr = 1e6")
    code, err = run_cli(tb, capsys, "train")
    assert_failed_cleanly(tb, code, err, "nothing was saved", "lower train.lr")
    # which check fires first (the loss of a step, or the weights after an epoch) depends on
    # the numerics: this net trains contiguous (oneDNN #6035), other nets channels-last
    assert re.search(r"train ce s0: the (loss became (nan|-?inf)|weights became non-finite)",
                     err), err


@pytest.mark.parametrize("command", ["run", "train"])
@pytest.mark.parametrize("seeds", ["0", "-1"])
def test_seeds_below_one_are_an_argument_error(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, command: str, seeds: str
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--seeds", seeds])
    assert info.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_the_same_extra_ood_name_twice_is_an_error(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    path = tb.root / "mnist" / "test.npz"
    code, err = run_cli(tb, capsys, "run", "--extra-ood", f"x={path}", "--extra-ood",
                        f"x={path}")
    assert_failed_cleanly(tb, code, err, "--extra-ood names 'x' twice")


# --- 13-14. device, output folder ---------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_without_cuda(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    code, err = run_cli(tb, capsys, "run", "--device", "cuda")
    assert_failed_cleanly(tb, code, err, "--device cuda was requested",
                          "torch.cuda.is_available() is False", "use --device cpu")


@pytest.mark.parametrize("how", ["below-a-file", "read-only-folder"])
def test_output_folder_not_writable(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, how: str
) -> None:
    if how == "below-a-file":
        blocker = tb.config.parent / "locked"
        blocker.write_text("a file")
    else:
        # Linux refuses writes in /proc/sys's top folder to every user, root included (a
        # chmod-ed folder would not stop root, who runs CI)
        blocker = Path("/proc/sys")
        if not blocker.is_dir() or os.access(blocker, os.W_OK):
            pytest.skip("no read-only /proc/sys here (not Linux)")
    out = blocker / "results"
    code, err = run_cli(tb, capsys, "run", "--out", str(out))
    why = "is a file, not a folder" if how == "below-a-file" else "is not writable"
    assert_failed_cleanly(tb, code, err, f"{out / 'tiny'}: cannot write there because "
                          f"{blocker} {why}", "pass --out a folder you can write to")
    assert not out.exists()


# --- catch-all, --debug, Ctrl-C -----------------------------------------------------------


def test_unexpected_error_shows_its_traceback_as_a_bug(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "_run", boom)
    code = cli.main(["run", "--config", str(tb.config)])
    err = capsys.readouterr().err
    assert code == 1 and not written(tb.out) and not written(tb.runs)
    # a bug, not bad input: its traceback, then one line that says so
    assert "Traceback" in err and 'raise ZeroDivisionError("boom")' in err
    assert "error: ZeroDivisionError: boom: this is a bug in oodbench" in " ".join(err.split())
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "run", "--config", str(tb.config)])
    with pytest.raises(ZeroDivisionError):  # also after the sub-command
        cli.main(["run", "--config", str(tb.config), "--debug"])


def test_debug_reraises_expected_errors(tb: SimpleNamespace) -> None:
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        cli.main(["--debug", "run", "--benchmark", "tinny", "--config", str(tb.config)])


def test_ctrl_c_exits_130(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupt)
    code, err = run_cli(tb, capsys, "run")
    assert code == 130 and "error: interrupted (Ctrl-C)" in err
