"""Result tables: post-hoc scorers × trainings, rendered as Markdown, LaTeX and rich tables.

Input is the tidy long frame of ``metrics.csv`` (columns ``benchmark, training, seed, scorer,
ood_set, group, metric, value`` and optionally ``note``). Every table builder returns a
DataFrame of display strings (percentages with 2 decimals, ``"mean ± std"`` when there is
more than one seed, ``"failed"`` for failed cells, ``"—"`` for cells without data, a
trailing ``"†"`` where a scorer's scores were degenerate) whose ``attrs`` keep the numbers
behind them:

- ``attrs["mean"]``, ``attrs["std"]``: float frames of the same shape, in metric units
  (fractions, not percent); NaN where a cell is failed or missing,
- ``attrs["metric"]``, ``attrs["baseline"]`` (training name), ``attrs["n_seeds"]``,
- ``attrs["failures"]``: one line per failure reason behind the table's cells,
- ``attrs["warnings"]``: one line per warning (a ``note`` starting ``"warning: "``) behind the
  cells marked ``"†"``; a Δ cell is marked when either of its trainings is.

A column labelled ``"Δ <training>"`` holds treatment − baseline, computed per seed (paired)
before averaging; every other column holds one training. A compat table also keeps
``attrs["verdicts"]`` (:class:`~oodbench.verdicts.Verdict` per training and scorer: better, no
evidence or worse than the baseline by a paired test, :mod:`oodbench.verdicts`, shown as
``▲`` / ``▼`` after the Δ of scope ``"all"``) and ``attrs["stats"]`` (the settings they were
made with). The intervals of the test-sample bootstrap are read from their own rows of
``metrics.csv`` (:data:`~oodbench.metrics.BOUNDS`), never computed here.
"""

import json
import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from oodbench.config import SANITY, StatsSpec
from oodbench.errors import ConfigError, DataError, OodbenchError
from oodbench.fileio import atomic_write_text, check_files
from oodbench.manifest import FILES_KEY, MANIFEST_FILE, METRICS_FILE
from oodbench.metrics import (
    AUROC,
    BOUNDS,
    COLUMNS,
    FAILED,
    FPR95,
    HEADLINE,
    ID_ACC,
    LOWER_IS_BETTER,
    METRIC_LABELS,
    MISSING,
    OOD_METRICS,
    WARNING,
)
from oodbench.objectives import list_objectives, objective_label
from oodbench.openood import PROTOCOLS, write_openood_csvs
from oodbench.registry import did_you_mean
from oodbench.verdicts import (
    BETTER,
    MARKS,
    NO_EVIDENCE,
    TESTS,
    WORSE,
    Verdict,
    cell_verdicts,
    min_attainable_p,
)

DELTA = "Δ "
FLAGGED = "†"  # after the value of a cell whose scores were degenerate

_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "Δ": r"$\Delta$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "—": "---",
    "·": r"$\cdot$",
    FLAGGED: r"\textsuperscript{\dag}",
    MARKS[BETTER]: r"$\blacktriangle$",
    MARKS[WORSE]: r"$\blacktriangledown$",
    "α": r"$\alpha$",
    "×": r"$\times$",
}
_PREAMBLE = (
    "\\documentclass{article}\n"
    "\\usepackage[landscape,margin=1.5cm]{geometry}\n"
    "\\usepackage{booktabs}\n"
    "\\usepackage{amssymb}\n"
    "\\begin{document}\n"
)

_Seeds = dict[tuple[str, str], pd.Series]  # (training, row key) -> value per seed
_Flags = set[tuple[str, str]]  # (training, row key) of the cells with a warning


def training_label(name: str) -> str:
    """Display name of a training: a training named after its objective shows the objective's
    ``label``; any other training shows its own name."""
    return objective_label(name) if name in list_objectives() else name


def higher_is_better(metric: str) -> bool:
    """Whether larger values of `metric` are better."""
    return metric not in LOWER_IS_BETTER


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of `df` with text columns as ``str`` ('' where missing) and a ``note`` column."""
    if "benchmark" in df and df["benchmark"].nunique() > 1:
        raise ValueError("frame holds several benchmarks; select one first")
    out = df.copy()
    for col in ("scorer", "ood_set", "group", "note"):
        out[col] = out[col].astype(object).fillna("").astype(str) if col in out else ""
    out["training"] = out["training"].astype(str)
    return out


def _ood_rows(data: pd.DataFrame, metric: str) -> pd.DataFrame:
    """OOD rows (scorer set) of `metric`; raises if there are none."""
    rows = data[(data["metric"] == metric) & (data["scorer"] != "")]
    if rows.empty:
        raise ValueError(f"no OOD rows with metric {metric!r}")
    return rows


def ordered_trainings(rows: pd.DataFrame, baseline: str | None = None) -> list[str]:
    """Trainings in order of appearance, baseline first (default: the first to appear, which
    is the benchmark's first training)."""
    order = list(rows["training"].unique())
    base = baseline if baseline is not None else order[0]
    if base not in order:
        raise ValueError(f"baseline {base!r} not among trainings {order}")
    return [base, *(t for t in order if t != base)]


def _per_seed(rows: pd.DataFrame, key: str) -> _Seeds:
    """Mean of ``value`` over `rows` per (training, `key`, seed); NaN if any value is NaN."""
    means = rows.groupby(["training", key, "seed"], sort=False)["value"].agg(_strict_mean)
    return {k: s.droplevel([0, 1]) for k, s in means.groupby(level=[0, 1], sort=False)}


def _flagged(rows: pd.DataFrame, key: str) -> _Flags:
    """(training, `key`) of the `rows` that kept a value with a warning note."""
    hit = rows[rows["value"].notna() & rows["note"].str.startswith(WARNING)]
    return set(zip(hit["training"], hit[key], strict=True))


def _strict_mean(values: pd.Series) -> float:
    """The mean, NaN when any value is NaN (a failed cell)."""
    return values.mean(skipna=False)


def _signed(x: float) -> str:
    """Percentage with an explicit sign, e.g. ``+1.23`` or ``−0.45``."""
    body = f"{abs(x) * 100:.2f}"
    return ("−" if x < 0 and body != "0.00" else "+") + body


def _cell(
    values: pd.Series | None, spread: bool, signed: bool, flagged: bool = False
) -> tuple[float, float, str]:
    """Mean, sample std (ddof=1; 0 for one seed) and display text of one cell's seed values
    (``FLAGGED`` after it when `flagged`); a cell of one seed shows no spread."""
    if values is None or values.empty:
        return math.nan, math.nan, MISSING
    if values.isna().any():
        return math.nan, math.nan, FAILED
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    text = _signed(mean) if signed else f"{mean * 100:.2f}"
    text = f"{text} ± {std * 100:.2f}" if spread and len(values) > 1 else text
    return mean, std, text + FLAGGED if flagged else text


def _paired_delta(treat: pd.Series | None, base: pd.Series | None) -> pd.Series | None:
    """Treatment − baseline per seed, over the seeds both have."""
    if treat is None or base is None:
        return None
    t, b = treat.align(base, join="inner")
    return t - b


def _block(
    seeds: _Seeds, rows: list[str], trainings: list[str], spread: bool,
    flags: _Flags | None = None,
) -> list[pd.DataFrame]:
    """Mean, std and text frames for the baseline, then each treatment and its Δ."""
    base = trainings[0]
    flags = flags or set()
    cells: dict[str, list[tuple[float, float, str]]] = {}
    for t in trainings:
        cells[training_label(t)] = [
            _cell(seeds.get((t, r)), spread, False, (t, r) in flags) for r in rows
        ]
        if t != base:
            cells[DELTA + training_label(t)] = [
                _cell(_paired_delta(seeds.get((t, r)), seeds.get((base, r))), spread, True,
                      bool({(t, r), (base, r)} & flags))
                for r in rows
            ]
    return [
        pd.DataFrame({c: [v[i] for v in vals] for c, vals in cells.items()}, index=rows)
        for i in range(3)
    ]


def _finish(
    frames: list[pd.DataFrame], index_name: str, metric: str, baseline: str, rows: pd.DataFrame
) -> pd.DataFrame:
    """Text frame with the numeric frames and metadata attached as ``attrs``."""
    mean, std, text = frames
    for frame in frames:
        frame.index.name = index_name
    text.attrs = {
        "metric": metric,
        "baseline": baseline,
        "n_seeds": int(rows["seed"].nunique()),
        "mean": mean,
        "std": std,
        "failures": failure_notes(rows),
        "warnings": warning_notes(rows),
    }
    return text


def _scoped(blocks: dict[str, list[pd.DataFrame]], level: str) -> list[pd.DataFrame]:
    """Concatenate per-scope blocks under a (`level`, column) MultiIndex."""
    return [
        pd.concat({k: b[i] for k, b in blocks.items()}, axis=1, names=[level, "column"])
        for i in range(3)
    ]


def compat_table(
    df: pd.DataFrame, metric: str = FPR95, baseline: str | None = None,
    stats: StatsSpec | None = None,
) -> pd.DataFrame:
    """Scorer × (scope, training/Δ) table of `metric` averaged over OOD sets.

    Scopes: ``"all"`` (every OOD set), then each group in sorted order (if any). Per seed the
    metric is first averaged over the scope's sets, then mean ± std is taken across seeds.
    For a metric of :data:`~oodbench.metrics.OOD_METRICS`, each Δ of scope ``"all"`` is
    followed by its verdict's mark (:func:`verdicts`; ``stats``: α and correction, default
    the config's defaults).
    """
    data = _prepare(df)
    rows = _ood_rows(data, metric)
    trainings = ordered_trainings(rows, baseline)
    scorers = list(rows["scorer"].unique())
    spread = rows["seed"].nunique() > 1
    groups = sorted(g for g in rows["group"].unique() if g)
    scopes = {"all": rows} | {g: rows[rows["group"] == g] for g in groups}
    blocks = {
        scope: _block(_per_seed(sub, "scorer"), scorers, trainings, spread,
                      _flagged(sub, "scorer"))
        for scope, sub in scopes.items()
    }
    table = _finish(_scoped(blocks, "scope"), "scorer", metric, trainings[0], rows)
    stats = stats or StatsSpec()
    found = verdicts(data, metric, trainings[0], stats) if metric in OOD_METRICS else []
    for v in found:
        col = ("all", DELTA + training_label(v.training))
        if MARKS[v.verdict] and table.at[v.scorer, col] not in (FAILED, MISSING):
            table.at[v.scorer, col] += f" {MARKS[v.verdict]}"
    table.attrs |= {"verdicts": found, "stats": stats}
    return table


def verdicts(df: pd.DataFrame, metric: str, baseline: str,
             stats: StatsSpec | None = None) -> list[Verdict]:
    """Each (training other than ``baseline``, scorer) cell of `metric` against the baseline:
    :func:`oodbench.verdicts.cell_verdicts` over the OOD sets outside the sanity group, at
    ``stats``' α and correction (default: the config's defaults)."""
    stats = stats or StatsSpec()
    return cell_verdicts(_prepare(df), metric, baseline, stats.alpha, stats.correction,
                         (SANITY,), stats.test)


def verdict_note(table: pd.DataFrame) -> str:
    """The footnote of a compat table's verdict marks: the test, its pairing, α, the
    correction and how many cells it spans, and, when the pairs are too few for any verdict,
    the smallest p they allow; ``""`` for a table without verdicts."""
    found: list[Verdict] = table.attrs.get("verdicts", [])
    tested = [v for v in found if v.n]
    if not tested:
        return ""
    stats: StatsSpec = table.attrs["stats"]
    base = training_label(table.attrs["baseline"])
    sizes = sorted({v.n for v in tested})
    pairs = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
    holm = stats.correction == "holm"
    cells = f"{len(tested)} training × scorer cell{'s' if len(tested) > 1 else ''}"
    family = f"Holm-corrected over the {cells} of this metric" if holm else f"uncorrected ({cells})"
    test = TESTS[stats.test].name
    note = (f"{MARKS[BETTER]} / {MARKS[WORSE]}: better / worse than {base}, beside the Δ over "
            f"all OOD sets; no mark: no evidence. Two-sided {test} of the "
            f"differences treatment − {base}, one pair per (seed, OOD set) over the OOD "
            f"sets outside the {SANITY} group, a failed value leaving its pair out "
            f"(n = {pairs} pairs per cell); {family}; α = {stats.alpha:g}.")
    threshold = stats.alpha / len(tested) if holm else stats.alpha
    smallest = min_attainable_p(sizes[0], stats.test)
    if smallest > threshold:
        note += (f" With n = {sizes[0]} pairs the smallest p the test can give is "
                 f"{smallest:.3g}, above the smallest threshold "
                 f"{'α / cells' if holm else 'α'} = {threshold:.3g}: such a cell cannot be "
                 "called better or worse (more seeds or OOD sets can).")
    return note


def per_ood_table(
    df: pd.DataFrame, metric: str = FPR95, baseline: str | None = None
) -> pd.DataFrame:
    """Scorer × (OOD set, training/Δ) table of `metric`, sets in order of appearance."""
    data = _prepare(df)
    rows = _ood_rows(data, metric)
    trainings = ordered_trainings(rows, baseline)
    scorers = list(rows["scorer"].unique())
    spread = rows["seed"].nunique() > 1
    blocks = {
        name: _block(_per_seed(sub, "scorer"), scorers, trainings, spread,
                     _flagged(sub, "scorer"))
        for name, sub in rows.groupby("ood_set", sort=False)
    }
    return _finish(_scoped(blocks, "ood_set"), "scorer", metric, trainings[0], rows)


def accuracy_table(df: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """One-row table of ID accuracy per training (and Δ per treatment), mean ± std."""
    data = _prepare(df)
    rows = data[data["metric"] == ID_ACC]
    if rows.empty:
        raise ValueError(f"no {ID_ACC} rows")
    trainings = ordered_trainings(rows, baseline)
    frames = _block(_per_seed(rows, "metric"), [ID_ACC], trainings, rows["seed"].nunique() > 1)
    for frame in frames:
        frame.index = [METRIC_LABELS[ID_ACC]]
    return _finish(frames, "metric", ID_ACC, trainings[0], rows)


def failure_notes(df: pd.DataFrame) -> list[str]:
    """One line per failed (training, scorer, reason) in `df`, listing the affected seeds."""
    data = _prepare(df)
    failed = data[data["value"].isna()]
    lines = []
    for (training, scorer, note), grp in failed.groupby(["training", "scorer", "note"], sort=False):
        seeds = sorted(grp["seed"].unique())
        which = "seed" if len(seeds) == 1 else "seeds"
        lines.append(
            f"{training_label(training)} / {scorer or 'ID accuracy'} "
            f"({which} {', '.join(map(str, seeds))}): {note or 'no reason recorded'}"
        )
    return lines


def warning_notes(df: pd.DataFrame) -> list[str]:
    """One line per (training, scorer, OOD set, warning) in `df` of a cell that kept its
    value, listing the affected seeds."""
    data = _prepare(df)
    flagged = data[data["value"].notna() & data["note"].str.startswith(WARNING)]
    lines = []
    keys = ["training", "scorer", "ood_set", "note"]
    for (training, scorer, ood_set, note), grp in flagged.groupby(keys, sort=False):
        seeds = sorted(grp["seed"].unique())
        which = "seed" if len(seeds) == 1 else "seeds"
        lines.append(f"{training_label(training)} / {scorer} on {ood_set} "
                     f"({which} {', '.join(map(str, seeds))}): {note}")
    return lines


def _last(col: object) -> str:
    """Bottom-level label of a (possibly MultiIndex) column key."""
    return str(col[-1] if isinstance(col, tuple) else col)


def _header(col: object, sep: str) -> str:
    """Column key as one header string, levels joined by `sep`."""
    return sep.join(map(str, col)) if isinstance(col, tuple) else str(col)


def _column_groups(table: pd.DataFrame) -> list[list]:
    """Columns grouped by top level (scope / OOD set); a flat index is one group."""
    if isinstance(table.columns, pd.MultiIndex):
        return [[c for c in table.columns if c[0] == top] for top in table.columns.unique(level=0)]
    return [list(table.columns)]


def _best_mask(table: pd.DataFrame) -> pd.DataFrame:
    """True where a training column holds the best displayed value of its group and row.

    Only rows where at least two trainings have a value get a best cell; ties all count.
    """
    mean = table.attrs["mean"].mul(100).round(2)
    lower = not higher_is_better(table.attrs["metric"])
    mask = pd.DataFrame(False, index=table.index, columns=table.columns)
    for cols in _column_groups(table):
        values = mean[[c for c in cols if not _last(c).startswith(DELTA)]]
        best = values.min(axis=1) if lower else values.max(axis=1)
        comparable = values.notna().sum(axis=1) >= 2
        hits = values.eq(best, axis=0).where(comparable, False, axis=0)
        mask.loc[:, hits.columns] = hits.to_numpy()
    return mask


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", r"\|") for c in cells) + " |"


def _md_lines(header: list[str], rows: Iterable[Iterable[str]], aligns: str) -> list[str]:
    """A Markdown table's lines; ``aligns`` has one ``l`` or ``r`` per column."""
    rule = "|" + "".join(" :--- |" if a == "l" else " ---: |" for a in aligns)
    return [_md_row(header), rule, *(_md_row(row) for row in rows)]


def to_markdown(table: pd.DataFrame, bold: bool = True, notes: bool = True) -> str:
    """GitHub Markdown of a table; best training per group and row in bold, failures below.

    MultiIndex column levels are joined with " · " into one header row.
    """
    cells = table.mask(_best_mask(table), "**" + table + "**") if bold else table
    lines = _md_lines([table.index.name or "", *(_header(c, " · ") for c in table.columns)],
                      ([label, *row] for label, row in zip(table.index, cells.to_numpy(),
                                                           strict=True)),
                      "l" + "r" * table.shape[1])
    if notes and table.attrs["failures"]:
        lines += ["", "Failed cells:", "", *(f"- {n}" for n in table.attrs["failures"])]
    if notes and table.attrs["warnings"]:
        lines += ["", f"{FLAGGED} Degenerate scores (values kept):", "",
                  *(f"- {n}" for n in table.attrs["warnings"])]
    if notes and verdict_note(table):
        lines += ["", verdict_note(table)]
    return "\n".join(lines) + "\n"


def _latex_text(value: object) -> str:
    """Escape LaTeX special characters and spell the table's unicode symbols in LaTeX."""
    return "".join(_LATEX.get(ch, ch) for ch in str(value))


def to_latex(table: pd.DataFrame, caption: str, label: str, standalone: bool = True) -> str:
    """Booktabs LaTeX of a table via ``Styler.to_latex``; best training per group and row bold.

    `caption` is inserted as LaTeX source (escape it yourself); cell and header text is
    escaped. Failure reasons follow the tabular. With `standalone`, a compilable document.
    """
    bold = np.where(_best_mask(table), "textbf: --rwrap;", "")

    def bold_cells(_: pd.DataFrame) -> np.ndarray:
        return bold

    names = [None] * (table.columns.nlevels - 1) + [table.index.name]
    styler = (
        table.rename_axis(columns=names)
        .style.format(_latex_text)
        .format_index(_latex_text, axis=0)
        .format_index(_latex_text, axis=1)
        .apply(bold_cells, axis=None)
        .hide(names=True, axis="index")
    )
    body = styler.to_latex(
        column_format="l" + "r" * table.shape[1],
        position="htbp",
        position_float="centering",
        hrules=True,
        multicol_align="c",
        caption=caption,
        label=label,
    )
    lines = body.splitlines()
    if isinstance(table.columns, pd.MultiIndex):
        start, rules = 2, []
        for cols in _column_groups(table):
            rules.append(rf"\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
            start += len(cols)
        lines.insert(lines.index(r"\toprule") + 2, " ".join(rules))
    if table.attrs["failures"]:
        notes = "; ".join(_latex_text(n) for n in table.attrs["failures"])
        lines.insert(
            lines.index(r"\end{table}"), rf"\par\smallskip{{\footnotesize Failed: {notes}.}}"
        )
    if table.attrs["warnings"]:
        notes = "; ".join(_latex_text(n) for n in table.attrs["warnings"])
        lines.insert(lines.index(r"\end{table}"),
                     rf"\par\smallskip{{\footnotesize {_latex_text(FLAGGED)} Degenerate scores: "
                     rf"{notes}.}}")
    if verdict_note(table):
        lines.insert(lines.index(r"\end{table}"),
                     rf"\par\smallskip{{\footnotesize {_latex_text(verdict_note(table))}}}")
    body = "\n".join(lines) + "\n"
    return _PREAMBLE + body + "\\end{document}\n" if standalone else body


def rich_table(table: pd.DataFrame, title: str) -> Table:
    """Terminal table: best training bold, Δ green when it improves and red when it worsens.

    Column groups (scopes / OOD sets) are stacked as row sections to keep the table narrow.
    """
    mask = _best_mask(table)
    gain = table.attrs["mean"].mul(100).round(2)
    if not higher_is_better(table.attrs["metric"]):
        gain = -gain
    multi = isinstance(table.columns, pd.MultiIndex)
    groups = _column_groups(table)
    notes = [*table.attrs["failures"], *(f"{FLAGGED} {n}" for n in table.attrs["warnings"])]
    notes += [verdict_note(table)] if verdict_note(table) else []
    out = Table(title=title, caption="\n".join(notes) or None, caption_justify="left")
    if multi:
        out.add_column(table.columns.names[0] or "")
    out.add_column(table.index.name or "")
    for col in groups[0]:
        out.add_column(_last(col), justify="right")
    for k, cols in enumerate(groups):
        if k:
            out.add_section()
        for i, label in enumerate(table.index):
            cells = []
            for col in cols:
                j = table.columns.get_loc(col)
                style = "bold" if mask.iat[i, j] else ""
                if _last(col).startswith(DELTA):
                    style = "green" if gain.iat[i, j] > 0 else "red" if gain.iat[i, j] < 0 else ""
                cells.append(Text(table.iat[i, j], style=style))
            lead = [str(cols[0][0]) if i == 0 else ""] if multi else []
            out.add_row(*lead, str(label), *cells)
    return out


def _has_ood(df: pd.DataFrame, metric: str) -> bool:
    return bool(((df["metric"] == metric) & df["scorer"].notna() & (df["scorer"] != "")).any())


def _seed_line(df: pd.DataFrame) -> str:
    seeds = sorted(df["seed"].unique())
    if len(seeds) == 1:
        return f"Values in %: single seed ({seeds[0]})."
    line = f"Values in %: mean ± sample std (ddof=1) over {len(seeds)} seeds."
    fewer = {t: n for t, n in df.groupby("training", sort=False)["seed"].nunique().items()
             if n < len(seeds)}
    if fewer:
        line += (" Fewer for " + ", ".join(f"{training_label(t)} ({n})" for t, n in
                                           fewer.items())
                 + ": a value of one seed shows no ±, and a Δ is over the seeds both have.")
    return line


def print_summary(
    df: pd.DataFrame, console: Console | None = None, baseline: str | None = None,
    stats: StatsSpec | None = None,
) -> None:
    """Print ID accuracy and FPR95/AUROC compat tables for each benchmark in `df` (verdicts
    at ``stats``' α and correction)."""
    console = console or Console()
    groups = df.groupby("benchmark", sort=False) if "benchmark" in df else [("", df)]
    for bench, data in groups:
        console.print(f"[bold]{bench}[/bold] {_seed_line(data)}", highlight=False)
        if (data["metric"] == ID_ACC).any():
            console.print(rich_table(accuracy_table(data, baseline), f"{bench} ID accuracy"))
        for metric in HEADLINE:
            if _has_ood(data, metric):
                table = compat_table(data, metric, baseline, stats)
                console.print(rich_table(table, f"{bench} {METRIC_LABELS[metric]}"))


def compatibility_lines(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Markdown lines of the compact table of verdicts: per training and metric (the compat
    ``tables`` by metric), the scorers it helps, leaves alone (no evidence; ``(untested)``
    after a scorer without one pair to test: failed or missing) and hurts."""
    rows = []
    trainings = dict.fromkeys(v.training for t in tables.values() for v in t.attrs["verdicts"])
    for training in trainings:
        for metric, table in tables.items():
            found = [v for v in table.attrs["verdicts"] if v.training == training]
            rows.append([training_label(training), METRIC_LABELS.get(metric, metric),
                         *(", ".join(v.scorer + ("" if v.n else " (untested)")
                                     for v in found if v.verdict == kind) or MISSING
                           for kind in (BETTER, NO_EVIDENCE, WORSE))])
    if not rows:
        return []
    header = ["training", "metric", f"helps ({MARKS[BETTER]})", NO_EVIDENCE,
              f"hurts ({MARKS[WORSE]})"]
    return _md_lines(header, rows, "lllll")


def uncertainty_table(df: pd.DataFrame, metric: str = FPR95, baseline: str | None = None,
                      stats: StatsSpec | None = None) -> pd.DataFrame:
    """Scorer × (training, quantity) text table in %: the mean width of the bootstrap interval
    of `metric` (its stored bound rows, :data:`~oodbench.metrics.BOUNDS`) over seeds × OOD
    sets outside the sanity group, beside the seed std (the sample std over seeds of each set's
    value, averaged over the sets; ``"—"`` with one seed). ``"failed"`` where a value is NaN;
    ``stats``: the level shown in the header."""
    data = _prepare(df)
    rows = data[(data["scorer"] != "") & (data["group"] != SANITY)]
    lo, hi = BOUNDS[metric]
    trainings = ordered_trainings(_ood_rows(rows, metric), baseline)
    keys = ["training", "scorer", "seed", "ood_set"]
    bounds = rows[rows["metric"].isin([lo, hi])].pivot(index=keys, columns="metric",
                                                       values="value")
    width = (bounds[hi] - bounds[lo]).groupby(level=[0, 1], sort=False).agg(_strict_mean)
    values = rows[rows["metric"] == metric].set_index(keys)["value"]
    spread = values.groupby(level=[0, 1, 3], sort=False).agg(_strict_std)
    seed_std = spread.groupby(level=[0, 1], sort=False).agg(_strict_mean)
    level = f"{(stats or StatsSpec()).level * 100:g}% CI width"
    scorers = list(rows.loc[rows["metric"] == metric, "scorer"].unique())
    out = pd.DataFrame(index=pd.Index(scorers, name="scorer"))
    one_seed = rows["seed"].nunique() < 2
    for t in trainings:
        for name, series in ((level, width), ("seed std", seed_std)):
            out[(training_label(t), name)] = [
                MISSING if (t, s) not in series.index or (one_seed and name == "seed std")
                else FAILED if math.isnan(series[(t, s)]) else f"{series[(t, s)] * 100:.2f}"
                for s in scorers]
    return out


def _strict_std(values: pd.Series) -> float:
    """The sample std (ddof=1), NaN when any value is NaN or there is one value."""
    return math.nan if values.isna().any() else values.std(ddof=1)


def _uncertainty_lines(data: pd.DataFrame, baseline: str | None,
                       stats: StatsSpec | None) -> list[str]:
    """The "test-sample uncertainty" section of compat.md (nothing without bound rows)."""
    lo, hi = BOUNDS[FPR95]
    if not {lo, hi} <= set(data["metric"]):
        return []
    stats = stats or StatsSpec()
    table = uncertainty_table(data, FPR95, baseline, stats)
    level = f"{stats.level * 100:g}%"
    return ["", "## Test-sample uncertainty (FPR95)", "",
            f"Mean width of each cell's {level} percentile-bootstrap interval of FPR95 (ID "
            f"test and OOD samples resampled independently, {stats.bootstrap_resamples} "
            f"resamples: the `{lo}` / `{hi}` rows of metrics.csv) over seeds × OOD sets outside "
            f"the {SANITY} group, beside the seed std (the sample std over seeds of each set's "
            "FPR95, averaged over the sets), in %. An interval about four seed stds wide means "
            "that resampling the test set moves a cell about as much as another seed does.",
            "", *_md_lines(["scorer", *(_header(c, " · ") for c in table.columns)],
                           ([s, *row] for s, row in zip(table.index, table.to_numpy(),
                                                        strict=True)),
                           "l" + "r" * table.shape[1])]


def write_reports(
    df: pd.DataFrame, out_dir: Path, benchmark: str, baseline: str | None = None,
    stats: StatsSpec | None = None,
) -> list[Path]:
    """Write ``compat.md`` and ``compat_{fpr95,auroc}.tex`` for `benchmark` into `out_dir`.

    Rows of other benchmarks are ignored; LaTeX files are written for the metrics present.
    ``stats`` (default: the config's defaults) sets the verdicts' α and correction and the
    uncertainty section's level.
    """
    data = df[df["benchmark"] == benchmark] if "benchmark" in df else df
    if data.empty:
        raise ValueError(f"no rows for benchmark {benchmark!r}")
    prepared = _prepare(data)
    base = ordered_trainings(prepared, baseline)[0]
    metrics = [m for m in HEADLINE if _has_ood(data, m)]
    md = [
        f"# {benchmark}: post-hoc OOD scorers × training",
        "",
        f"Baseline training: **{training_label(base)}** (`{base}`); "
        "Δ = treatment − baseline in percentage points, paired by seed.",
        "",
        _seed_line(data) + " A scope's value is first averaged over its OOD sets per seed.",
    ]
    grouped = prepared[(prepared["scorer"] != "") & (prepared["group"] != "")]
    groups = grouped.groupby("group")["ood_set"].unique()
    if not groups.empty:
        md += ["", "OOD groups: " + "; ".join(f"{g} = {', '.join(s)}" for g, s in groups.items())]
    if (data["metric"] == ID_ACC).any():
        md += ["", "## ID accuracy", "", to_markdown(accuracy_table(data, baseline), notes=False)]
    compat = {m: compat_table(data, m, baseline, stats) for m in metrics}
    per_ood = {m: per_ood_table(data, m, baseline) for m in metrics}
    for tables, what in ((compat, "mean over OOD sets"), (per_ood, "per OOD set")):
        for metric, table in tables.items():
            md += ["", f"## {METRIC_LABELS[metric]}, {what}", "", to_markdown(table, notes=False)]
            md += [verdict_note(table)] if verdict_note(table) else []
    compatibility = compatibility_lines(compat)
    if compatibility:
        md += ["", "## Compatibility", "",
               f"Per training, the scorers whose FPR95 / AUROC it makes better than "
               f"{training_label(base)} ({MARKS[BETTER]}), leaves without evidence either way, "
               f"or makes worse ({MARKS[WORSE]}), by the test of the tables above.", "",
               *compatibility]
    md += _uncertainty_lines(data, baseline, stats)
    failures = failure_notes(data)
    md += ["", "## Failures", "", *(f"- {n}" for n in failures or ["None."])]
    warnings = warning_notes(data)
    if warnings:
        md += ["", f"## Degenerate scores ({FLAGGED}, values kept)", "",
               *(f"- {n}" for n in warnings)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "compat.md"]
    atomic_write_text(paths[0], "\n".join(md).rstrip("\n") + "\n")
    for metric in metrics:
        caption = _latex_text(
            f"{METRIC_LABELS[metric]} (%) on {benchmark}, mean over OOD sets; "
            f"Δ = treatment − {training_label(base)}. {_seed_line(data)}"
        )
        path = out_dir / f"compat_{metric}.tex"
        atomic_write_text(path, to_latex(compat[metric], caption, f"tab:{benchmark}-{metric}"))
        paths.append(path)
    return paths


CHOICE_RULE = ("the lowest mean validation FPR95 among the variants other than the baseline "
               "whose validation accuracy is within 0.5 points of the baseline's")


def choose_variant(table: pd.DataFrame, baseline: str) -> str | None:
    """Apply ``CHOICE_RULE`` to an ablation table (index: training; columns ``FPR95 mean``
    and ``id_acc`` in %); ``None`` when the baseline is missing or no variant qualifies."""
    if baseline not in table.index:
        return None
    floor = table.loc[baseline, ID_ACC] - 0.5
    ok = table[(table.index != baseline) & (table[ID_ACC] >= floor)]
    return str(ok["FPR95 mean"].idxmin()) if len(ok) else None


def ablation_frame(df: pd.DataFrame, diagnostics: Iterable[str] = ()) -> pd.DataFrame:
    """One row per training variant: validation FPR95 per scorer and its mean, mean AUROC,
    validation accuracy (all in %), then each diagnostic (NaN where a checkpoint lacks it)."""
    table = df[df["metric"] == FPR95].pivot_table(
        index="training", columns="scorer", values="value", aggfunc="mean", sort=False) * 100
    table.columns = [f"FPR95 {c}" for c in table.columns]
    table["FPR95 mean"] = table.mean(axis=1)
    by_training = df.groupby(["metric", "training"], sort=False)["value"].mean()
    table["AUROC mean"] = by_training[AUROC] * 100
    table[ID_ACC] = by_training[ID_ACC] * 100
    for name in diagnostics:
        table[name] = by_training.get(name, math.nan)
    return table


def ablation_table(
    df: pd.DataFrame,
    benchmark: str,
    val_ood: list[str],
    settings: dict[str, str],
    diagnostics: dict[str, str],
    baseline: str,
) -> str:
    """Markdown of an ablation: :func:`ablation_frame` with each variant's ``settings``, the
    variant ``CHOICE_RULE`` picks in bold, and a line per diagnostic a checkpoint lacks.

    ``diagnostics`` maps each diagnostic metric to its description.
    """
    table = ablation_frame(df, diagnostics)
    described = "; ".join(f"{k}: {v}, on the ID test set" for k, v in diagnostics.items())
    lines = [
        f"Ablation on the validation side of `{benchmark}`: ID = held-out ID-train images, "
        f"OOD = {', '.join(val_ood)}. {ID_ACC} is validation accuracy (%)"
        + (f"; {described}." if described else "."),
        "",
        "| training | setting | " + " | ".join(table.columns) + " |",
        "|---|---|" + "---|" * len(table.columns),
    ]
    chosen = choose_variant(table, baseline)
    for name, row in table.iterrows():
        cells = " | ".join(MISSING if math.isnan(v) else f"{v:.2f}" for v in row)
        label = f"**{name}** (chosen)" if name == chosen else str(name)
        setting = settings.get(str(name), "").replace("|", "/")
        lines.append(f"| {label} | {setting} | {cells} |")
    missing = [f"- {name} records no {k}: its checkpoint was written without that diagnostic "
               "(by an older oodbench); delete it to retrain"
               for k in diagnostics for name in table.index if math.isnan(table.loc[name, k])]
    lines += ["", f"Rule: {CHOICE_RULE}. Chosen: **{chosen}**." if chosen else
              f"Rule: {CHOICE_RULE}. No variant qualifies."]
    if missing:
        lines += ["", *missing]
    return "\n".join(lines) + "\n"


def check_results(folder: Path) -> None:
    """Refuse a results folder whose metrics.csv or scores files are not the ones its
    manifest hashed (a mix of two runs); a manifest too old to hold the hashes is a warning,
    a folder without a manifest (not written by a run) is not checked."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text()).get(FILES_KEY)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise DataError(f"{path} is not a readable manifest ({type(e).__name__}: {e})",
                        "run the benchmark again into this folder") from e
    if recorded is None:
        warnings.warn(f"{path} records no file hashes (written by an older oodbench), so "
                      "its files are not checked against each other", stacklevel=2)
        return
    check_files(folder, recorded, path)


def read_metrics(folder: Path) -> pd.DataFrame:
    """``folder/metrics.csv``, checked: every column there, at least one row, and every
    metric value in [0, 1] or NaN (a failed cell); text columns as ``str``. A folder whose
    files differ from the hashes its manifest records is refused (:func:`check_results`)."""
    check_results(Path(folder))
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        raise OodbenchError(f"{path} not found", "run the benchmark first (oodbench run, or "
                            "run_benchmark), or point at the folder that holds its results")
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable metrics CSV ({type(e).__name__}: {e})",
                        "write it again with oodbench run") from e
    missing = [c for c in COLUMNS if c not in df.columns and c != "note"]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}",
                        f"a metrics.csv has the columns {', '.join(COLUMNS)}")
    if df.empty:
        raise DataError(f"{path} holds a header but no rows", "run the benchmark again")
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = df.index[(values.isna() & df["value"].notna()) | (values < 0) | (values > 1)]
    if len(bad):
        row = df.loc[bad[0]]
        raise DataError(f"{path} line {bad[0] + 2}: {row['metric']} = {row['value']} "
                        f"({row['training']}, scorer {row['scorer']!r}, OOD set "
                        f"{row['ood_set']!r}) is not a number in [0, 1]",
                        "metric values are fractions; the file was edited or is not "
                        "oodbench's")
    df["value"] = values
    return _prepare(df)


def results_stats(folder: Path) -> StatsSpec:
    """The ``stats`` settings the benchmark of a results folder ran with (its manifest's
    config), else the defaults (no manifest, or one written before they existed)."""
    path = Path(folder) / MANIFEST_FILE
    try:
        recorded = json.loads(path.read_text())["config"]["stats"]
    except (OSError, ValueError, KeyError, TypeError):
        return StatsSpec()
    return StatsSpec(**recorded)


def read_results(folder: Path, metric: str = FPR95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The checked ``metrics.csv`` of a results folder and its compat table of ``metric``
    (which must be one of the metrics the file holds), with the verdicts at the α and
    correction the folder was made with (:func:`results_stats`)."""
    df = read_metrics(folder)
    present = sorted(set(df.loc[df["scorer"] != "", "metric"]))
    if metric not in present:
        raise ConfigError(f"<metric={metric}> is not in {Path(folder) / 'metrics.csv'};"
                          f"{did_you_mean(metric, present)} it holds: {', '.join(present)}")
    return df, compat_table(df, metric, stats=results_stats(folder))


def _plain(col: object) -> str:
    return _header(col, " / ").replace("Δ", "delta")


def to_csv(table: pd.DataFrame) -> str:
    """CSV of a table's numbers: per column its mean and sample std in % (plain numbers,
    ASCII minus, empty where failed or missing)."""
    mean, std = table.attrs["mean"] * 100, table.attrs["std"] * 100
    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        out[f"{_plain(col)} mean"] = mean[col]
        out[f"{_plain(col)} std"] = std[col]
    return out.to_csv(float_format="%.6g")


def table_records(table: pd.DataFrame) -> dict[str, object]:
    """A table as JSON-ready data: metric, baseline, seeds, failures, warnings, one record per
    cell (row, column levels, mean and std as fractions or null, display text), and for a
    compat table its verdicts (:meth:`~oodbench.verdicts.Verdict.record`, with the test's
    α, correction and footnote)."""
    mean, std = table.attrs["mean"], table.attrs["std"]
    cells = []
    for row in table.index:
        for col in table.columns:
            m, s = mean.at[row, col], std.at[row, col]
            cells.append({table.index.name or "row": str(row),
                          "column": list(col) if isinstance(col, tuple) else [str(col)],
                          "mean": None if math.isnan(m) else float(m),
                          "std": None if math.isnan(s) else float(s),
                          "text": str(table.at[row, col])})
    out = {"metric": table.attrs["metric"], "baseline": table.attrs["baseline"],
           "n_seeds": table.attrs["n_seeds"], "failures": table.attrs["failures"],
           "warnings": table.attrs["warnings"], "cells": cells}
    if "verdicts" in table.attrs:
        stats: StatsSpec = table.attrs["stats"]
        out["test"] = {"alpha": stats.alpha, "correction": stats.correction,
                       "note": verdict_note(table)}
        out["verdicts"] = [v.record() for v in table.attrs["verdicts"]]
    return out


def export_protocol(folder: Path, protocol: str, out: Path | None = None) -> list[Path]:
    """Write a results folder's metrics in another project's format (``protocol``: one of
    :data:`oodbench.openood.PROTOCOLS`) under ``out`` (default ``folder/openood``); returns
    the files written. The folder is checked as :func:`read_metrics` checks it; the files
    written are not in its manifest, and :func:`check_results` ignores files it does not
    record, so the folder stays valid (a later run replaces the folder, these files too)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"<protocol={protocol}> is not a known protocol",
                          f"use one of {', '.join(PROTOCOLS)}")
    folder = Path(folder)
    return write_openood_csvs(read_metrics(folder), folder,
                              Path(out) if out is not None else folder / "openood")
