"""Model-level scorers (ODIN) in the pipeline, and GradNorm's closed form against autograd."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from oodbench.cli import main
from oodbench.scoring import Features, ModelScorer, create_scorer


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_gradnorm_matches_the_last_layer_gradient(temperature: float) -> None:
    gen = torch.Generator().manual_seed(0)
    fc = nn.Linear(6, 4)
    feats = torch.rand(5, 6, generator=gen) * 3
    expected = []
    for f in feats:
        fc.zero_grad()
        logits = fc(f[None]) / temperature
        loss = (-torch.log_softmax(logits, dim=1) / 4).sum()
        loss.backward()
        expected.append(fc.weight.grad.abs().sum().item())
    data = Features(feats, fc(feats).detach(), torch.zeros(5, dtype=torch.long))
    got = create_scorer("gradnorm", temperature=temperature).score(data)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def test_odin_without_noise_is_tempered_msp() -> None:
    model, x = _model(), torch.randn(6, 1, 8, 8)
    odin = create_scorer("odin", temperature=10.0, noise=0.0)
    assert isinstance(odin, ModelScorer)
    got = odin.score_batch(model, x, torch.ones(1, 1, 1, 1))
    torch.testing.assert_close(got, (model(x) / 10.0).softmax(1).amax(1).detach())


def test_odin_matches_a_per_sample_reference_and_raises_confidence() -> None:
    model, x = _model(), torch.randn(6, 1, 8, 8)
    std, noise, temp = torch.full((1, 1, 1, 1), 0.5), 0.01, 100.0
    got = create_scorer("odin", temperature=temp, noise=noise).score_batch(model, x, std)
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        logits = model(xi) / temp
        (-logits.log_softmax(1).max()).backward()
        step = xi.detach() - noise * xi.grad.sign() / std
        ref = (model(step) / temp).softmax(1).max().item()
        assert got[i].item() == pytest.approx(ref, rel=1e-5)
    assert (got >= (model(x) / temp).softmax(1).amax(1) - 1e-7).all()


def test_odin_params_validated() -> None:
    with pytest.raises(ValueError, match="temperature"):
        create_scorer("odin", temperature=0.0)
    with pytest.raises(ValueError, match="noise"):
        create_scorer("odin", noise=-1.0)
    with pytest.raises(TypeError, match="needs the model"):
        create_scorer("odin").score(Features(torch.ones(2, 3), torch.ones(2, 2),
                                             torch.zeros(2, dtype=torch.long)))


def test_model_scorer_runs_in_the_matrix_and_is_cached(tiny_bench: SimpleNamespace) -> None:
    args = ["run", "--benchmark", "tiny", "--config", str(tiny_bench.config), "--data-root",
            str(tiny_bench.root), "--runs-dir", str(tiny_bench.runs), "--out",
            str(tiny_bench.out), "--scorers", "msp,odin", "--seeds", "1"]
    assert main(args) == 0
    df = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv")
    odin = df[(df.scorer == "odin") & (df.metric == "auroc")]
    assert len(odin) and odin.value.notna().all() and odin.note.isna().all()
    cached = sorted(tiny_bench.runs.glob("tiny/cache/*/*-odin-*.npy"))
    assert len(cached) == 2 * 3  # (ce, bgnorm) x (ID test, mnist, uniform-noise)
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert main(args) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    again = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv")
    pd.testing.assert_frame_equal(df, again)
