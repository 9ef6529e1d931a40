"""Speed work must not change results: every built-in scorer's scores and metrics on a fixed
tiny model and fixed images equal the stored reference (``tests/reference``) within 1e-5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tests.reference.evaluation import HERE, evaluate

TOL = 1e-5


def test_scores_and_metrics_match_the_stored_reference(tmp_path: Path) -> None:
    state = torch.load(HERE / "model.pt", weights_only=True)
    rows, scores = evaluate(state, tmp_path)
    with np.load(HERE / "scores.npz") as ref:
        assert sorted(scores) == sorted(ref.files)
        for key in ref.files:
            np.testing.assert_allclose(scores[key], ref[key], rtol=TOL, atol=TOL, err_msg=key)
    expected = json.loads((HERE / "metrics.json").read_text())["rows"]
    key = lambda r: (r["scorer"], r["ood_set"], r["metric"])  # noqa: E731
    assert sorted(map(key, rows)) == sorted(map(key, expected))
    got = {key(r): r for r in rows}
    for want in expected:
        have = got[key(want)]
        assert have["note"] == want["note"] == ""
        assert abs(have["value"] - want["value"]) <= TOL, key(want)
