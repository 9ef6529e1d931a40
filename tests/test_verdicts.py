"""Verdicts (oodbench.verdicts) and how the tables show them: Holm's correction, the direction
of a lower- and a higher-is-better metric, the sanity sets and failed pairs left out, too few
pairs said honestly, the marks in Markdown and LaTeX, the compatibility and uncertainty
sections of compat.md, and ``oodbench table --json``."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oodbench import cli, report
from oodbench.config import StatsSpec
from oodbench.verdicts import BETTER, NO_EVIDENCE, WORSE, cell_verdicts, holm, min_attainable_p

SETS = {"mnist": "far", "svhn": "far", "cifar100": "near", "noise": "sanity"}


def frame(diffs: dict[str, float], seeds: int = 3, sets: dict[str, str] = SETS,
          auroc: float = -1) -> pd.DataFrame:
    """fpr95 and auroc rows of ce and bgnorm, one row per (scorer, seed, OOD set): bgnorm's
    fpr95 is ce's plus ``diffs[scorer]`` (plus 0.001 times 1, 2, ... per seed and set, so the
    differences have no ties); auroc is ``1 - fpr95`` (``auroc=-1``) or ``fpr95 + 0.2``
    (``auroc=1``: the same differences)."""
    rows = []
    for scorer, diff in diffs.items():
        for seed in range(seeds):
            for i, (ood_set, group) in enumerate(sets.items()):
                base = 0.3 + 0.05 * i + 0.01 * seed
                wiggle = 0.001 * (seed * len(sets) + i + 1) * np.sign(diff)
                for training, fpr in (("ce", base), ("bgnorm", base + diff + wiggle)):
                    for metric, value in (("fpr95", fpr),
                                          ("auroc", 1 - fpr if auroc < 0 else fpr + 0.2)):
                        rows.append({"benchmark": "toy", "training": training, "seed": seed,
                                     "scorer": scorer, "ood_set": ood_set, "group": group,
                                     "metric": metric, "value": value, "note": ""})
    return pd.DataFrame(rows)


def verdicts(df: pd.DataFrame, metric: str, alpha: float = 0.05, correction: str = "holm",
             test: str = "wilcoxon"):
    return {v.scorer: v for v in cell_verdicts(report._prepare(df), metric, "ce", alpha,
                                               correction, ("sanity",), test)}


def t_by_hand(diffs: list[float]) -> float:
    """The one-sample t statistic of ``diffs`` against 0, written out."""
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return mean / (sd / math.sqrt(n))


def test_the_t_test_by_hand_and_its_untested_cases() -> None:
    df = frame({"energy": -0.1, "msp": 0.05, "knn": 0.0})
    knn = (df["scorer"] == "knn") & (df["training"] == "bgnorm") & (df["metric"] == "fpr95")
    ce = df[(df["scorer"] == "knn") & (df["training"] == "ce") & (df["metric"] == "fpr95")]
    df.loc[knn, "value"] = ce["value"].to_numpy() + 0.02  # the same difference everywhere
    cells = verdicts(df, "fpr95", test="t")
    diffs = [-0.1 - 0.001 * (seed * 4 + i + 1) for seed in range(3) for i in range(3)]
    assert cells["energy"].statistic == pytest.approx(t_by_hand(diffs))
    assert cells["energy"].p < 1e-6 and cells["energy"].verdict == BETTER
    assert cells["msp"].statistic > 0 and cells["msp"].verdict == WORSE
    # no spread: t is undefined, the cell is untested and not counted by Holm (k = 2)
    assert math.isnan(cells["knn"].p) and cells["knn"].verdict == NO_EVIDENCE
    assert cells["energy"].p_adjusted == pytest.approx(min(1, 2 * cells["energy"].p))
    one = frame({"energy": -0.1}, seeds=1, sets={"mnist": "far", "noise": "sanity"})
    assert math.isnan(verdicts(one, "fpr95", test="t")["energy"].p)  # one pair
    assert min_attainable_p(9, "t") == 0.0 < min_attainable_p(9) == 2 / 2**9


def test_holm_by_hand() -> None:
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # an untested cell (NaN) stays NaN and is not counted: k = 2
    assert holm([0.01, math.nan, 0.04]) == pytest.approx([0.02, math.nan, 0.04], nan_ok=True)
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]).size == 0


def test_direction_follows_each_metric() -> None:
    """The same differences: lower is better for fpr95, worse for auroc."""
    df = frame({"energy": -0.1, "msp": 0.05}, auroc=1)
    fpr, auroc = verdicts(df, "fpr95"), verdicts(df, "auroc")
    assert fpr["energy"].statistic == auroc["energy"].statistic == -45  # all 9 ranks negative
    assert fpr["energy"].verdict == BETTER and auroc["energy"].verdict == WORSE
    assert fpr["msp"].statistic == 45
    assert fpr["msp"].verdict == WORSE and auroc["msp"].verdict == BETTER
    assert fpr["energy"].p == pytest.approx(min_attainable_p(9)) == 2 / 2**9
    assert fpr["energy"].p_adjusted == pytest.approx(2 * fpr["energy"].p)  # Holm over 2 cells
    assert fpr["energy"].delta == pytest.approx(-0.106)  # -0.1 - 0.001 * mean(1..3, 5..7, 9..11)
    as_usual = verdicts(frame({"energy": -0.1}), "auroc")["energy"]  # auroc = 1 - fpr95
    assert as_usual.statistic == 45 and as_usual.verdict == BETTER


def test_sanity_sets_and_failed_pairs_are_left_out() -> None:
    df = frame({"energy": 0.0}, sets={"mnist": "far", "noise": "sanity"})
    noise = (df["training"] == "bgnorm") & (df["ood_set"] == "noise")
    df.loc[noise, "value"] += 0.3  # a large change on the noise set alone
    energy = verdicts(df, "fpr95")["energy"]
    assert energy.n == 3 and energy.statistic == 0 and energy.p == 1
    assert energy.verdict == NO_EVIDENCE and energy.delta == 0
    df = frame({"energy": -0.1})
    failed = (df["training"] == "bgnorm") & (df["seed"] == 1) & (df["ood_set"] == "svhn")
    df.loc[failed, "value"] = np.nan
    energy = verdicts(df, "fpr95")["energy"]
    assert energy.n == 8 and energy.statistic == -36 and energy.verdict == BETTER
    df.loc[df["training"] == "bgnorm", "value"] = np.nan
    energy = verdicts(df, "fpr95")["energy"]
    assert energy.n == 0 and math.isnan(energy.p) and energy.verdict == NO_EVIDENCE


def test_the_correction_spans_every_cell_of_a_metric() -> None:
    """Three cells of 6 pairs, all lower: p = 1/32 each; Holm's smallest threshold 0.05 / 3
    calls none better, no correction calls all three."""
    df = frame({"energy": -0.1, "msp": -0.1, "knn": -0.1}, seeds=2)
    holm_ = verdicts(df, "fpr95")
    assert all(v.p == pytest.approx(1 / 32) for v in holm_.values())
    assert {v.verdict for v in holm_.values()} == {NO_EVIDENCE}
    assert {v.verdict for v in verdicts(df, "fpr95", correction="none").values()} == {BETTER}
    assert {v.verdict for v in verdicts(df, "fpr95", alpha=0.1).values()} == {BETTER}


def test_too_few_pairs_get_no_evidence_and_the_note_says_why() -> None:
    df = frame({"energy": -0.1}, seeds=1, sets={"mnist": "far", "svhn": "far"})
    table = report.compat_table(df, stats=StatsSpec(test="wilcoxon"))
    energy = table.attrs["verdicts"][0]
    assert energy.n == 2 and energy.p == 0.5 and energy.verdict == NO_EVIDENCE
    assert table.loc["energy", ("all", "Δ BG-norm")] == "−10.15"  # no mark
    note = report.verdict_note(table)
    assert "n = 2 pairs" in note and "smallest p the test can give is 0.5" in note
    assert "α = 0.05" in note and "Holm" in note and "1 training × scorer cell " in note


def test_markdown_and_latex_show_the_marks_and_the_test() -> None:
    df = frame({"energy": -0.1, "msp": 0.05})
    table = report.compat_table(df)
    assert table.loc["energy", ("all", "Δ BG-norm")].endswith(" ▲")
    assert table.loc["msp", ("all", "Δ BG-norm")].endswith(" ▼")
    assert not table.loc["energy", ("far", "Δ BG-norm")].endswith("▲")  # scope "all" only
    md = report.to_markdown(table)
    assert "▲" in md and "▼" in md
    assert ("Two-sided paired t-test of the differences treatment − CE, "
            "one pair per (seed, OOD set) over the OOD sets outside the sanity group") in md
    assert "Holm-corrected over the 2 training × scorer cells of this metric; α = 0.05" in md
    tex = report.to_latex(table, "c", "tab:c")
    assert r"\usepackage{amssymb}" in tex and r"$\blacktriangle$" in tex
    assert r"$\blacktriangledown$" in tex and r"$\alpha$ = 0.05" in tex
    assert "▲" not in tex and "α" not in tex and "×" not in tex
    assert report.compat_table(df, stats=StatsSpec(alpha=0.001)).attrs["stats"].alpha == 0.001


def _with_bounds(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with fpr95_lo / _hi and auroc_lo / _hi rows 2 points either side (NaN where the
    value is)."""
    extra = [row | {"metric": f"{row['metric']}_{side}", "value": row["value"] + shift}
             for row in df.to_dict("records")
             for side, shift in (("lo", -0.02), ("hi", 0.02))]
    return pd.concat([df, pd.DataFrame(extra)], ignore_index=True)


def test_compat_md_has_the_compatibility_and_uncertainty_sections(tmp_path: Path) -> None:
    df = frame({"energy": -0.1, "msp": 0.05, "knn": 0.0})
    failed = (df["scorer"] == "knn") & (df["training"] == "bgnorm")
    df.loc[failed, ["value", "note"]] = [np.nan, "oops"]
    md = report.write_reports(_with_bounds(df), tmp_path, "toy")[0].read_text()
    assert "| BG-norm | FPR95 ↓ | energy | knn (untested) | msp |" in md
    assert "| BG-norm | AUROC ↑ | energy | knn (untested) | msp |" in md
    assert "## Test-sample uncertainty (FPR95)" in md
    # every width is 4 points; the seed std of a set's values is 1 point for CE (0.30, 0.31,
    # 0.32, ...), for BG-norm 0.6 on energy and 1.4 on msp (each seed moves 0.004 more, down
    # for energy's lower values, up for msp's)
    assert "| energy | 4.00 | 1.00 | 4.00 | 0.60 |" in md
    assert "| msp | 4.00 | 1.00 | 4.00 | 1.40 |" in md
    assert "| knn | 4.00 | 1.00 | failed | failed |" in md
    without = report.write_reports(df, tmp_path / "old", "toy")[0].read_text()
    assert "## Compatibility" in without and "Test-sample uncertainty" not in without


def test_table_json_carries_the_verdicts(tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    _with_bounds(frame({"energy": -0.1, "msp": 0.05})).to_csv(folder / "metrics.csv",
                                                              index=False)
    assert cli.main(["table", "--benchmark", "toy", "--results", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["test"]["alpha"] == 0.05 and data["test"]["correction"] == "holm"
    assert "paired t-test" in data["test"]["note"]
    energy = next(v for v in data["verdicts"] if v["scorer"] == "energy")
    diffs = [-0.1 - 0.001 * (seed * 4 + i + 1) for seed in range(3) for i in range(3)]
    assert energy == {"training": "bgnorm", "scorer": "energy", "metric": "fpr95", "n": 9,
                      "delta": pytest.approx(-0.106), "statistic": pytest.approx(t_by_hand(diffs)),
                      "p": pytest.approx(energy["p"]), "p_adjusted": pytest.approx(energy["p"] * 2),
                      "verdict": BETTER}
    assert cli.main(["table", "--benchmark", "toy", "--results", str(tmp_path), "--json",
                     "--metric", "fpr95_hi"]) == 0  # the bound rows, for scripts
    assert json.loads(capsys.readouterr().out)["metric"] == "fpr95_hi"


def test_results_stats_reads_the_manifest(tmp_path: Path) -> None:
    assert report.results_stats(tmp_path) == StatsSpec()
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"config": {"stats": {"bootstrap_resamples": 500, "level": 0.9, "bootstrap_seed": 1,
                              "alpha": 0.01, "correction": "none", "test": "wilcoxon"}}}))
    assert report.results_stats(tmp_path) == StatsSpec(500, 0.9, 1, 0.01, "none", "wilcoxon")
