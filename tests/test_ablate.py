"""The validation-side ablation: variants, the choice rule, and no test OOD set in sight."""

from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from oodbench.cli import main
from oodbench.report import ablation_table, choose_variant
from tests.conftest import TINY_CONFIG

VARIANTS = """
ablate_scorers = ["msp", "energy"]

[[benchmarks.tiny.ablate]]
name = "ft-l0"
objective = "bgnorm"
init = "ce"
params = { lam = 0.0 }
train = { epochs = 1, lr = 0.01, schedule = "cosine" }

[[benchmarks.tiny.ablate]]
name = "ft-ratio"
objective = "bgnorm"
init = "ce"
params = { lam = 1.0, form = "ratio", warmup_start = 0.0, warmup_epochs = 0.0 }
train = { epochs = 1, lr = 0.01, schedule = "cosine" }
"""


def test_choose_variant_rule() -> None:
    table = pd.DataFrame({"FPR95 mean": [50.0, 20.0, 30.0, 40.0],
                          "id_acc": [90.0, 89.0, 89.6, 91.0]},
                         index=["ce", "too-inaccurate", "ok", "better-acc"])
    assert choose_variant(table, "ce") == "ok"
    assert choose_variant(table.drop(index=["ok", "better-acc"]), "ce") is None
    assert choose_variant(table.drop(index="ce"), "ce") is None


def test_ablation_table_names_a_checkpoint_without_a_diagnostic() -> None:
    rows = [{"benchmark": "b", "training": t, "seed": 0, "scorer": s, "ood_set": "v",
             "group": "val", "metric": m, "value": v, "note": ""}
            for t in ("ce", "old") for s, m, v in (("msp", "fpr95", 0.5), ("msp", "auroc", 0.7),
                                                   ("", "id_acc", 0.9))]
    rows.append(rows[2] | {"metric": "bg_norm_test", "value": 3.0})  # only ce records it
    text = ablation_table(pd.DataFrame(rows), "b", ["v"], {}, {"bg_norm_test": "a norm"}, "ce")
    assert "old records no bg_norm_test" in text
    assert "| ce |  | 50.00 | 50.00 | 70.00 | 90.00 | 3.00 |" in text
    # old ties CE's FPR95 at CE's accuracy, so the rule picks it
    assert "| **old** (chosen) |  | 50.00 | 50.00 | 70.00 | 90.00 | — |" in text


def test_ablate_scores_validation_side_only(tiny_bench: SimpleNamespace) -> None:
    config = Path(tiny_bench.config)
    head, _, rest = TINY_CONFIG.partition("\n[benchmarks.tiny.train]")
    config.write_text(head + VARIANTS.split("\n[[")[0] + "\n[benchmarks.tiny.train]" + rest
                      + "\n[[" + VARIANTS.split("\n[[", 1)[1])
    assert main(["ablate", "--benchmark", "tiny", "--config", str(config), "--data-root",
                 str(tiny_bench.root), "--runs-dir", str(tiny_bench.runs), "--out",
                 str(tiny_bench.out)]) == 0
    out = tiny_bench.out / "tiny"
    df = pd.read_csv(out / "ablation.csv")
    assert set(df.training) == {"ce", "bgnorm", "ft-l0", "ft-ratio"}
    assert set(df.scorer.dropna()) == {"msp", "energy"}
    assert set(df.ood_set.dropna()) == {"mnist"}  # val_ood only: no uniform-noise, no cifar
    text = (out / "ablation.md").read_text()
    chosen = [line.split("**")[1] for line in text.splitlines() if "(chosen)" in line]
    fpr = df[df.metric == "fpr95"].groupby("training").value.mean() * 100
    acc = df[df.metric == "id_acc"].groupby("training").value.mean() * 100
    ok = [t for t in fpr.index if t != "ce" and acc[t] >= acc["ce"] - 0.5]
    expected = min(ok, key=lambda t: fpr[t]) if ok else None
    assert chosen == ([expected] if expected else [])
    assert f"Chosen: **{expected}**" in text if expected else "No variant qualifies" in text
