"""Tests for oodbench.report: aggregation, formatting and rendering of result tables."""

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from oodbench import report
from oodbench.errors import ConfigError, DataError

SETS = {"mnist": "far", "svhn": "far", "cifar100": "near"}
# fpr95 per OOD set (in SETS order) per training and scorer; auroc = 1 - fpr95.
FPR = {
    "ce": {"energy": [0.10, 0.20, 0.60], "msp": [0.30, 0.40, 0.50]},
    "bgnorm": {"energy": [0.05, 0.15, 0.40], "msp": [0.35, 0.45, 0.55]},
}
# Per-seed offsets added to every fpr95 value of a training.
OFFSET = {"ce": [0.0, 0.01, 0.05], "bgnorm": [0.0, 0.04, 0.02]}
ACC = {"ce": [0.90, 0.91, 0.95], "bgnorm": [0.92, 0.92, 0.92]}


def make_df(seeds: int = 1, groups: bool = True, order: tuple[str, ...] = ("ce", "bgnorm")):
    """Tidy metrics frame: 2 trainings, 2 scorers, 3 OOD sets, id_acc rows."""
    rows = []
    for training in order:
        for seed in range(seeds):
            rows.append(
                {
                    "benchmark": "toy",
                    "training": training,
                    "seed": seed,
                    "scorer": np.nan,
                    "ood_set": np.nan,
                    "group": np.nan,
                    "metric": "id_acc",
                    "value": ACC[training][seed],
                }
            )
            for scorer, values in FPR[training].items():
                for (ood_set, group), fpr in zip(SETS.items(), values, strict=True):
                    fpr += OFFSET[training][seed]
                    for metric, value in (("fpr95", fpr), ("auroc", 1 - fpr)):
                        rows.append(
                            {
                                "benchmark": "toy",
                                "training": training,
                                "seed": seed,
                                "scorer": scorer,
                                "ood_set": ood_set,
                                "group": group if groups else np.nan,
                                "metric": metric,
                                "value": value,
                            }
                        )
    return pd.DataFrame(rows)


def fail(df: pd.DataFrame, training: str, scorer: str, note: str | None) -> pd.DataFrame:
    """Mark every row of (training, scorer) as failed with `note`."""
    df = df.copy()
    hit = (df["training"] == training) & (df["scorer"] == scorer)
    df.loc[hit, "value"] = np.nan
    if note is not None:
        df["note"] = np.where(hit, note, "")
    return df


def test_single_seed_scope_averages_and_delta():
    table = report.compat_table(make_df(), "fpr95")
    assert list(table.columns.unique(level=0)) == ["all", "far", "near"]
    assert list(table.columns.unique(level=1)) == ["CE", "BG-norm", "Δ BG-norm"]
    assert list(table.index) == ["energy", "msp"]
    assert table.loc["energy", ("all", "CE")] == "30.00"
    assert table.loc["energy", ("far", "CE")] == "15.00"
    assert table.loc["energy", ("near", "BG-norm")] == "40.00"
    assert table.loc["energy", ("all", "Δ BG-norm")] == "−10.00"
    assert table.loc["msp", ("all", "Δ BG-norm")] == "+5.00"
    mean = table.attrs["mean"]
    assert mean.loc["energy", ("all", "BG-norm")] == pytest.approx(0.20)
    assert table.attrs["std"].loc["energy", ("all", "CE")] == 0.0
    assert table.attrs["n_seeds"] == 1


def test_three_seeds_paired_delta_and_sample_std():
    table = report.compat_table(make_df(seeds=3), "fpr95")
    # CE energy "all" per seed: 30, 31, 35 -> mean 32, std sqrt(7) (ddof=1).
    assert table.loc["energy", ("all", "CE")] == "32.00 ± 2.65"
    # BG-norm per seed: 20, 24, 22 -> mean 22, std 2.
    assert table.loc["energy", ("all", "BG-norm")] == "22.00 ± 2.00"
    # Paired Δ per seed: -10, -7, -13 -> std 3 (unpaired would give sqrt(11)).
    # 9 (seed, OOD set) pairs all lower: ▲ (better), by the paired t-test (test_verdicts.py)
    assert table.loc["energy", ("all", "Δ BG-norm")] == "−10.00 ± 3.00 ▲"
    assert table.attrs["std"].loc["energy", ("all", "Δ BG-norm")] == pytest.approx(0.03)
    assert table.attrs["std"].loc["energy", ("all", "CE")] == pytest.approx(np.sqrt(7) / 100)
    assert table.attrs["n_seeds"] == 3


def test_baseline_choice():
    df = make_df(order=("bgnorm", "ce"))
    assert report.compat_table(df).attrs["baseline"] == "bgnorm"  # the first training
    chosen = report.compat_table(df, baseline="ce")
    assert list(chosen.columns.unique(level=1)) == ["CE", "BG-norm", "Δ BG-norm"]
    assert chosen.loc["energy", ("all", "Δ BG-norm")] == "−10.00"
    flipped = report.compat_table(df, baseline="bgnorm")
    assert list(flipped.columns.unique(level=1)) == ["BG-norm", "CE", "Δ CE"]
    assert flipped.loc["energy", ("all", "Δ CE")] == "+10.00"
    renamed = df.replace({"training": {"ce": "mixup"}})
    table = report.compat_table(renamed)
    assert table.attrs["baseline"] == "bgnorm"
    assert list(table.columns.unique(level=1)) == ["BG-norm", "mixup", "Δ mixup"]
    with pytest.raises(ValueError, match="baseline"):
        report.compat_table(df, baseline="logitnorm")


def test_per_ood_and_accuracy_tables():
    per_ood = report.per_ood_table(make_df(), "auroc")
    assert list(per_ood.columns.unique(level=0)) == ["mnist", "svhn", "cifar100"]
    assert per_ood.loc["energy", ("cifar100", "CE")] == "40.00"
    assert per_ood.loc["energy", ("cifar100", "Δ BG-norm")] == "+20.00"
    acc = report.accuracy_table(make_df(seeds=3))
    assert list(acc.columns) == ["CE", "BG-norm", "Δ BG-norm"]
    assert acc.iloc[0].tolist() == ["92.00 ± 2.65", "92.00 ± 0.00", "+0.00 ± 2.65"]


def test_no_groups_only_all_scope():
    table = report.compat_table(make_df(groups=False))
    assert list(table.columns.unique(level=0)) == ["all"]
    empty_groups = make_df().assign(group="")
    assert list(report.compat_table(empty_groups).columns.unique(level=0)) == ["all"]


def test_latex_bold_lower_and_higher_is_better():
    df = make_df()
    fpr = report.to_latex(report.compat_table(df, "fpr95"), "FPR", "tab:fpr")
    energy = next(line for line in fpr.splitlines() if line.startswith("energy"))
    assert r"\textbf{20.00}" in energy and r"\textbf{30.00}" not in energy
    msp = next(line for line in fpr.splitlines() if line.startswith("msp"))
    assert r"\textbf{40.00}" in msp and r"\textbf{45.00}" not in msp
    auroc = report.to_latex(report.compat_table(df, "auroc"), "AUROC", "tab:auroc")
    energy = next(line for line in auroc.splitlines() if line.startswith("energy"))
    assert r"\textbf{80.00}" in energy and r"\textbf{70.00}" not in energy
    msp = next(line for line in auroc.splitlines() if line.startswith("msp"))
    assert r"\textbf{60.00}" in msp and r"\textbf{55.00}" not in msp
    assert r"$-$10.00" in fpr and r"\textbf{$-$" not in fpr  # Δ is never bold


def test_latex_structure_and_standalone():
    table = report.compat_table(make_df(seeds=3))
    doc = report.to_latex(table, "Caption", "tab:x")
    for token in (
        r"\documentclass{article}",
        r"\usepackage{booktabs}",
        r"\begin{document}",
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"\multicolumn{3}{c}{all}",
        r"\cmidrule(lr){2-4}",
        r"\caption{Caption}",
        r"\label{tab:x}",
        r"$\pm$",
        r"$\Delta$ BG-norm",
    ):
        assert token in doc
    assert doc.rstrip().endswith(r"\end{document}")
    assert "±" not in doc and "Δ" not in doc and "−" not in doc
    fragment = report.to_latex(table, "Caption", "tab:x", standalone=False)
    assert r"\documentclass" not in fragment and fragment.startswith(r"\begin{table}")


def test_latex_escapes_names():
    df = make_df().replace({"scorer": {"energy": "react_energy"}, "ood_set": {"svhn": "50%_&"}})
    tex = report.to_latex(report.per_ood_table(df), "c", "tab:c")
    assert r"react\_energy" in tex and r"50\%\_\&" in tex
    assert "react_energy" not in tex and "50%" not in tex


def test_failed_cells_show_failed_and_reasons():
    df = fail(make_df(seeds=2), "bgnorm", "msp", "singular_covariance")
    table = report.compat_table(df)
    assert table.loc["msp", ("all", "BG-norm")] == "failed"
    assert table.loc["msp", ("all", "Δ BG-norm")] == "failed"
    assert table.loc["msp", ("all", "CE")] != "failed"
    assert table.attrs["failures"] == ["BG-norm / msp (seeds 0, 1): singular_covariance"]
    md = report.to_markdown(table)
    assert "failed" in md and "- BG-norm / msp (seeds 0, 1): singular_covariance" in md
    tex = report.to_latex(table, "c", "tab:c")
    assert r"singular\_covariance" in tex
    # Without a baseline partner there is nothing to bold in the failed row.
    assert not any(r"\textbf" in line for line in tex.splitlines() if line.startswith("msp"))


def test_failed_without_note_column():
    df = fail(make_df(), "ce", "energy", None)
    assert "note" not in df
    table = report.compat_table(df)
    assert table.loc["energy", ("all", "CE")] == "failed"
    assert table.attrs["failures"] == ["CE / energy (seed 0): no reason recorded"]


CONSTANT = "warning: 100.0% of scores equal (constant)"


def test_degenerate_cells_are_marked_and_listed(tmp_path: Path):
    df = fail(make_df(seeds=2), "ce", "energy", "oops")
    hit = (df["training"] == "bgnorm") & (df["scorer"] == "msp") & (df["ood_set"] == "mnist")
    df.loc[hit, "note"] = CONSTANT
    table = report.compat_table(df)
    assert table.loc["msp", ("all", "BG-norm")] == "47.00 ± 2.83†"
    assert table.loc["msp", ("all", "Δ BG-norm")] == "+6.50 ± 2.12† ▼"  # flag, then verdict
    assert not table.loc["msp", ("all", "CE")].endswith("†")
    assert table.loc["energy", ("all", "CE")] == "failed"  # a failed cell stays failed
    assert table.attrs["mean"].loc["msp", ("all", "BG-norm")] == pytest.approx(0.47)
    line = f"BG-norm / msp on mnist (seeds 0, 1): {CONSTANT}"
    assert table.attrs["warnings"] == [line]
    assert table.attrs["failures"] == ["CE / energy (seeds 0, 1): oops"]
    per_ood = report.per_ood_table(df)
    assert per_ood.loc["msp", ("mnist", "BG-norm")].endswith("†")
    assert not per_ood.loc["msp", ("svhn", "BG-norm")].endswith("†")
    assert report.compat_table(df).loc["msp", ("near", "BG-norm")][-1] != "†"
    md = report.to_markdown(table)
    assert "† Degenerate scores (values kept):" in md and f"- {line}" in md
    assert r"\textsuperscript{\dag}" in report.to_latex(table, "c", "tab:c")
    console = Console(record=True, width=200)
    console.print(report.rich_table(table, "FPR"))
    assert f"† {line}" in " ".join(console.export_text().split())  # the caption wraps
    assert report.table_records(table)["warnings"] == [line]
    report.write_reports(df, tmp_path, "toy")
    assert f"- {line}" in (tmp_path / "compat.md").read_text()


def test_csv_numbers_parse_with_ascii_minus():
    table = report.compat_table(fail(make_df(seeds=2), "ce", "msp", "oops"))
    text = report.to_csv(table)
    assert text.isascii()
    parsed = pd.read_csv(io.StringIO(text), index_col="scorer")
    assert all(pd.api.types.is_numeric_dtype(t) for t in parsed.dtypes)
    delta = parsed["all / delta BG-norm mean"]
    assert delta["energy"] < 0 and np.isnan(delta["msp"])
    assert delta["energy"] == pytest.approx(
        table.attrs["mean"].loc["energy", ("all", "Δ BG-norm")] * 100)
    assert parsed.loc["energy", "all / CE std"] == pytest.approx(
        table.attrs["std"].loc["energy", ("all", "CE")] * 100)


def _write_metrics(folder: Path, df: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "metrics.csv", index=False)
    return folder


@pytest.mark.parametrize(("value", "shown"),
                         [(1.5, "1.5"), (-0.25, "-0.25"), (np.inf, "inf"), ("abc", "abc")])
def test_read_metrics_refuses_values_outside_0_1(tmp_path: Path, value: object, shown: str):
    df = make_df().astype({"value": object})
    df.loc[5, "value"] = value
    with pytest.raises(DataError, match=rf"metrics.csv line 7: fpr95 = {shown} \(ce, scorer "
                                        r"'energy', OOD set 'cifar100'\) is not a number in"):
        report.read_metrics(_write_metrics(tmp_path, df))


def test_read_metrics_refuses_a_header_only_file(tmp_path: Path):
    with pytest.raises(DataError, match="holds a header but no rows"):
        report.read_metrics(_write_metrics(tmp_path, make_df().iloc[:0]))


def test_read_results_checks_the_metric(tmp_path: Path):
    folder = _write_metrics(tmp_path, make_df())
    with pytest.raises(ConfigError, match="did you mean 'auroc'") as info:
        report.read_results(folder, "aurc")
    assert "metric=aurc" in str(info.value) and "it holds: auroc, fpr95" in str(info.value)
    assert report.read_results(folder, "auroc")[1].attrs["metric"] == "auroc"


def test_missing_cells_are_dashed():
    df = make_df()
    df = df[~((df["training"] == "bgnorm") & (df["scorer"] == "msp"))]
    table = report.compat_table(df)
    assert table.loc["msp", ("all", "BG-norm")] == report.MISSING
    assert table.loc["msp", ("all", "Δ BG-norm")] == report.MISSING


def test_markdown_shape_and_bold():
    table = report.compat_table(make_df())
    lines = report.to_markdown(table, notes=False).strip().splitlines()
    assert len(lines) == 2 + len(table)
    assert all(line.count(" | ") == table.shape[1] for line in lines)
    assert lines[0].startswith("| scorer | all · CE | all · BG-norm | all · Δ BG-norm |")
    assert "**20.00**" in lines[2] and "**30.00**" not in lines[2]


def test_rich_table_colours_delta():
    fpr = report.rich_table(report.compat_table(make_df(), "fpr95"), "FPR")
    auroc = report.rich_table(report.compat_table(make_df(), "auroc"), "AUROC")
    for table in (fpr, auroc):
        assert [c.header for c in table.columns][:3] == ["scope", "scorer", "CE"]
        delta = list(table.columns[-1].cells)
        assert delta[0].style == "green"  # energy improves in both metrics
        assert delta[1].style == "red"  # msp worsens in both metrics
        assert next(iter(table.columns[3].cells)).style == "bold"


def test_print_summary():
    console = Console(record=True, width=120)
    report.print_summary(fail(make_df(seeds=3), "bgnorm", "msp", "oops"), console)
    text = console.export_text()
    for token in ("ID accuracy", "FPR95 ↓", "AUROC ↑", "over 3 seeds", "failed", "oops"):
        assert token in text


def test_multiple_benchmarks_rejected():
    df = pd.concat([make_df(), make_df().assign(benchmark="other")])
    with pytest.raises(ValueError, match="benchmarks"):
        report.compat_table(df)


def test_write_reports_roundtrip(tmp_path: Path):
    df = fail(make_df(seeds=3), "bgnorm", "msp", "oops")
    other = make_df().assign(benchmark="other")
    pd.concat([df, other]).to_csv(tmp_path / "metrics.csv", index=False)
    loaded = pd.read_csv(tmp_path / "metrics.csv")
    out = tmp_path / "reports"
    paths = report.write_reports(loaded, out, "toy")
    assert paths == [out / "compat.md", out / "compat_fpr95.tex", out / "compat_auroc.tex"]
    assert all(p.is_file() for p in paths)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    md = paths[0].read_text()
    for token in (
        "mean ± sample std (ddof=1) over 3 seeds",
        "Baseline training: **CE**",
        "## ID accuracy",
        "## FPR95 ↓, mean over OOD sets",
        "## AUROC ↑, per OOD set",
        "OOD groups: far = mnist, svhn; near = cifar100",
        "- BG-norm / msp (seeds 0, 1, 2): oops",
        "32.00 ± 2.65",
    ):
        assert token in md
    assert r"\end{document}" in paths[1].read_text()
    single = report.write_reports(make_df(), tmp_path / "single", "toy")[0].read_text()
    assert "single seed (0)" in single and "## Failures\n\n- None." in single


def test_standalone_latex_compiles(tmp_path: Path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    df = fail(make_df(seeds=3), "bgnorm", "msp", "singular_covariance 100%")
    tex = tmp_path / "compat.tex"
    tex.write_text(report.to_latex(report.compat_table(df), "FPR95 (\\%)", "tab:fpr"))
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "compat.pdf").is_file()


def test_a_training_with_fewer_seeds_shows_no_spread_and_says_so():
    df = make_df(seeds=3)
    df = df[~((df["training"] == "bgnorm") & (df["seed"] > 0))]  # BG-norm: seed 0 only
    table = report.compat_table(df, "fpr95")
    assert " ± " in table.loc["energy", ("all", "CE")]
    assert " ± " not in table.loc["energy", ("all", "BG-norm")]
    # the Δ is over seed 0, the one seed both have: -10 points, no spread
    assert table.loc["energy", ("all", "Δ BG-norm")].startswith("−10.00")
    assert " ± " not in table.loc["energy", ("all", "Δ BG-norm")]
    line = report._seed_line(report._prepare(df))
    assert "over 3 seeds" in line and "Fewer for BG-norm (1)" in line
