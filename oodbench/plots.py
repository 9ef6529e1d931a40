"""Result plots from a finished run: score histograms, ROC curves, Δ FPR95 bar chart and heat
map, penultimate feature norms and the feature geometry.

Inputs are the files ``oodbench run`` writes to ``results/<benchmark>/``: ``metrics.csv``,
``geometry.csv`` and the per-sample scores ``scores/<training>-s<seed>.npz`` (key
``<scorer>/<dataset>``, higher = more ID; the diagnostics of :mod:`oodbench.geometry`:
``_featnorm/<dataset>``, ``_nn_dist/<dataset>``, ``_logit_norm/<dataset>``). Figures are
built on :class:`matplotlib.figure.Figure` (no pyplot, no global state) and written atomically
as PNG.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from oodbench.errors import DataError
from oodbench.fileio import atomic_write_bytes, check_export, inside, staged
from oodbench.geometry import (
    ERANK,
    FEATNORM,
    GEOMETRY_COLUMNS,
    LOGIT_NORM,
    NN_DIST,
    PER_SAMPLE,
    RATIO,
)
from oodbench.manifest import GEOMETRY_FILE, scores_file
from oodbench.metrics import FPR95, RECALL, auroc, roc_points
from oodbench.report import (
    DELTA,
    compat_table,
    ordered_trainings,
    per_ood_table,
    read_metrics,
    training_label,
)

__all__ = ["plot_results", "write_plots"]

DPI = 110
BINS = 60
TAIL = 1.0  # percent of each set cut at both ends when choosing histogram ranges
ID_COLOR = "0.25"
BETTER, WORSE = "#2e8b57", "#c0392b"
HEAT_CMAP = mpl.colormaps["RdYlGn_r"].with_extremes(bad="0.82")  # grey = failed / missing

_Scores = dict[str, np.ndarray]  # dataset -> per-sample scores of one (training, scorer)
_PLOT_FILE = re.compile(r"(hist|roc)_.+\.png|delta_fpr95(_heatmap)?\.png|feature_norms\.png"
                        r"|geometry(_summary)?\.png")


def _save(fig: Figure, path: Path) -> Path:
    """Render `fig` as PNG and write it atomically to `path`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _ood_sets(df: pd.DataFrame) -> dict[str, str]:
    """OOD set -> group, in order of appearance in ``metrics.csv``."""
    rows = df[df["ood_set"] != ""]
    return dict(zip(rows["ood_set"], rows["group"], strict=True))


def _load_scores(path: Path, scorers: list[str], ood: dict[str, str]) -> dict[str, _Scores]:
    """Scorer -> {dataset: scores} from one npz; the ID test set is stored under key ``""``."""
    out: dict[str, _Scores] = {}
    with np.load(path) as z:
        for key in z.files:
            scorer, _, dataset = key.partition("/")
            if scorer in scorers:
                out.setdefault(scorer, {})[dataset] = np.asarray(z[key], dtype=np.float64)
    for scorer, sets in list(out.items()):
        id_names = [d for d in sets if d not in ood]
        if len(id_names) != 1:
            raise DataError(f"{path}: scorer {scorer!r} needs one ID set, found {id_names}",
                            "write the scores again with oodbench run")
        sets[""] = sets.pop(id_names[0])
    return out


def _set_label(name: str, ood: dict[str, str]) -> str:
    return f"{name} ({ood[name]})" if ood[name] else name


def _colors(ood: dict[str, str]) -> dict[str, str]:
    """One fixed colour per OOD set, shared by every figure."""
    return {name: f"C{i % 10}" for i, name in enumerate(ood)}


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _failure(df: pd.DataFrame, training: str, scorer: str) -> str:
    """Why a (training, scorer) cell has no scores, from the ``note`` column."""
    notes = df.loc[(df["training"] == training) & (df["scorer"] == scorer), "note"]
    note = next((n for n in notes if n), "")
    return f"no scores\n{note}" if note else "no scores"


def _n_handles(legend: tuple[list, list[str]]) -> int:
    return len(legend[0])


def _bins(arrays: Iterable[np.ndarray]) -> np.ndarray | None:
    """Shared histogram bin edges covering all `arrays` except their outer ``TAIL`` percent;
    None when that range is wider than float64 can subtract (finite scores near ±1e308: no
    axis can hold them, though their ranking, hence every metric and ROC curve, stands)."""
    arrays = list(arrays)
    with np.errstate(over="ignore", invalid="ignore"):
        lo = min(float(np.percentile(a, TAIL)) for a in arrays)
        hi = max(float(np.percentile(a, 100 - TAIL)) for a in arrays)
        if not np.isfinite(hi - lo):
            return None
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, BINS + 1)


def _too_wide(ax: Axes, arrays: Iterable[np.ndarray]) -> None:
    """Say on `ax` why it has no histogram (:func:`_bins` gave None)."""
    values = np.concatenate(list(arrays))
    _empty(ax, f"no histogram: values span {values.min():.3g} to {values.max():.3g}, wider "
               "than float64 can subtract")


def _hist_panel(
    ax: Axes, sets: _Scores, ood: dict[str, str], bins: np.ndarray, xlabel: str,
    means: bool = False,
) -> None:
    """Density histograms of the ID test set (filled) and every OOD set on `bins`; with
    `means`, each set's mean is appended to its legend label."""
    def label(name: str, values: np.ndarray) -> str:
        return f"{name}: mean {values.mean():.2f}" if means else name

    edges = bins.tolist()  # matplotlib's stubs take a sequence of floats, not an array
    ax.hist(sets[""], bins=edges, density=True, histtype="stepfilled", color=ID_COLOR,
            alpha=0.3, label=label("ID test", sets[""]))
    colors = _colors(ood)
    for name in ood:
        if name in sets:
            ax.hist(sets[name], bins=edges, density=True, histtype="step", linewidth=1.4,
                    color=colors[name], label=label(_set_label(name, ood), sets[name]))
    ax.set_xlim(bins[0], bins[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")


def _roc_panel(ax: Axes, sets: _Scores, ood: dict[str, str]) -> None:
    """ROC curve (ID positive) per OOD set, AUROC in the legend."""
    colors = _colors(ood)
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    ax.axhline(RECALL, color="0.7", linestyle=":", linewidth=0.8)
    for name in ood:
        if name not in sets:
            continue
        labels = np.r_[np.ones(sets[""].size), np.zeros(sets[name].size)]
        fpr, tpr = roc_points(labels, np.r_[sets[""], sets[name]], drop_intermediate=True)
        area = auroc(sets[""], sets[name])
        ax.plot(fpr, tpr, color=colors[name], linewidth=1.4,
                label=f"{_set_label(name, ood)}: AUROC {area * 100:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("FPR (OOD accepted as ID)")
    ax.set_ylabel("TPR (ID accepted)")
    ax.legend(fontsize="small", loc="lower right")


def _score_figure(
    kind: str, scorer: str, scores: dict[str, dict[str, _Scores]], df: pd.DataFrame,
    ood: dict[str, str], title: str,
) -> Figure:
    """One panel per training (a failed or missing training gets a note)."""
    trainings = list(scores)
    extra = 2.2 if kind == "hist" else 0.0  # room for the shared legend
    fig = Figure(figsize=(extra + 5.0 * len(trainings), 4.8), layout="constrained")
    axes = fig.subplots(1, len(trainings), squeeze=False)[0]
    for ax, training in zip(axes, trainings, strict=True):
        sets = scores[training].get(scorer)
        ax.set_title(training_label(training))
        if sets is None:
            _empty(ax, _failure(df, training, scorer))
        elif kind == "hist":
            bins = _bins(sets.values())
            if bins is None:
                _too_wide(ax, sets.values())
            else:
                _hist_panel(ax, sets, ood, bins, "score (higher = more ID)")
        else:
            _roc_panel(ax, sets, ood)
    if kind == "hist":
        handles = [ax.get_legend_handles_labels() for ax in axes]
        fig.legend(*max(handles, key=_n_handles), loc="outside right upper", fontsize="small",
                   frameon=False)
    fig.suptitle(title)
    return fig


def _delta_figure(df: pd.DataFrame, bench: str) -> Figure | None:
    """Δ FPR95 (treatment − baseline, mean over OOD sets) per scorer; None with one training."""
    table = compat_table(df, FPR95)
    mean, std = table.attrs["mean"]["all"] * 100, table.attrs["std"]["all"] * 100
    treatments = [c for c in mean.columns if c.startswith(DELTA)]
    if not treatments:
        return None
    baseline = training_label(table.attrs["baseline"])
    scorers = list(mean.index)
    fig = Figure(figsize=(max(6.5, 1.2 + 0.8 * len(scorers) * len(treatments)), 4.6),
                 layout="constrained")
    axes = fig.subplots(1, len(treatments), squeeze=False, sharey=True)[0]
    x = np.arange(len(scorers))
    for ax, col in zip(axes, treatments, strict=True):
        m, s = mean[col].to_numpy(), std[col].to_numpy()
        ax.bar(x, np.nan_to_num(m), yerr=np.where(np.isnan(m), 0, s), capsize=3, width=0.7,
               color=[BETTER if v < 0 else WORSE for v in np.nan_to_num(m)],
               error_kw={"elinewidth": 1, "ecolor": "0.2"})
        for i, (v, e) in enumerate(zip(m, s, strict=True)):
            if np.isnan(v):
                ax.annotate("failed", (i, 0), xytext=(0, 3), textcoords="offset points",
                            ha="center", fontsize="small", color="0.4")
                continue
            tip = v - e if v < 0 else v + e  # beyond the error bar
            ax.annotate(f"{v:+.1f}".replace("-", "−"), (i, tip), xytext=(0, -12 if v < 0 else 4),
                        textcoords="offset points", ha="center", fontsize="small")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(x, scorers, rotation=30, ha="right")
        ax.set_title(f"{col.removeprefix(DELTA)} − {baseline}")
        ax.grid(axis="y", alpha=0.3)
    ax0 = axes[0]
    ax0.set_ylabel("Δ FPR95 (pp, lower = better)")
    ax0.margins(y=0.12)
    lo, hi = ax0.get_ylim()
    ax0.set_ylim(min(lo, -1.0), max(hi, 1.0))  # readable even when every cell failed
    n = table.attrs["n_seeds"]
    spread = f"mean ± std over {n} seeds" if n > 1 else "1 seed"
    fig.suptitle(f"{bench}: Δ FPR95 vs {baseline}\nmean over OOD sets, {spread}")
    return fig


def _delta_matrices(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Treatment label -> scorer × OOD set Δ (percentage points) from a :func:`per_ood_table`'s
    ``attrs["mean"]`` (paired by seed, mean over seeds); NaN where failed or missing."""
    mean = table.attrs["mean"] * 100
    columns = mean.columns.unique(level="column")
    return {
        col.removeprefix(DELTA): mean.xs(col, axis=1, level="column")
        for col in columns if col.startswith(DELTA)
    }


def _heatmap_figure(df: pd.DataFrame, bench: str, ood: dict[str, str]) -> Figure | None:
    """Heat map of Δ FPR95 per scorer and OOD set, one panel per treatment; None with one
    training. Colours are centred at 0 (green = fewer false positives than the baseline)."""
    table = per_ood_table(df, FPR95)
    deltas = _delta_matrices(table)
    if not deltas:
        return None
    baseline = training_label(table.attrs["baseline"])
    values = np.concatenate([m.to_numpy().ravel() for m in deltas.values()])
    values = values[np.isfinite(values)]
    limit = max(1.0, float(np.abs(values).max())) if values.size else 1.0
    first = next(iter(deltas.values()))
    n_rows, n_cols = first.shape
    fig = Figure(figsize=(2.2 + (1.6 + 1.05 * n_cols) * len(deltas), 1.9 + 0.45 * n_rows),
                 layout="constrained")
    axes = fig.subplots(1, len(deltas), squeeze=False, sharey=True)[0]
    for ax, (label, matrix) in zip(axes, deltas.items(), strict=True):
        m = matrix.to_numpy()
        image = ax.imshow(np.ma.masked_invalid(m), cmap=HEAT_CMAP, vmin=-limit, vmax=limit,
                          aspect="auto")
        text = table.xs(DELTA + label, axis=1, level="column")
        for (i, j), v in np.ndenumerate(m):
            if np.isnan(v):
                ax.text(j, i, text.iat[i, j], ha="center", va="center", fontsize="small",
                        color="0.25")
            else:
                ax.text(j, i, f"{v:+.1f}".replace("-", "−"), ha="center", va="center",
                        fontsize="small", color="white" if abs(v) > 0.6 * limit else "black")
        ax.set_xticks(range(n_cols), [_set_label(c, ood) for c in matrix.columns],
                      rotation=30, ha="right")
        ax.set_yticks(range(n_rows), list(matrix.index))
        ax.tick_params(length=0)
        ax.set_title(f"{label} − {baseline}")
    fig.colorbar(image, ax=list(axes), label="Δ FPR95 (pp, lower = better)", shrink=0.9)
    n = table.attrs["n_seeds"]
    spread = f"mean over {n} seeds, paired by seed" if n > 1 else "1 seed"
    fig.suptitle(f"{bench}: Δ FPR95 per OOD set vs {baseline}\n{spread}")
    return fig


def _norm_figure(
    norms: dict[str, _Scores], trainings: list[str], ood: dict[str, str], title: str
) -> Figure:
    """Feature-norm histograms, one panel per training on a shared x-axis (a training
    without norms gets a note)."""
    bins = _bins(a for sets in norms.values() for a in sets.values())
    fig = Figure(figsize=(5.0 * len(trainings), 5.8), layout="constrained")
    axes = fig.subplots(1, len(trainings), squeeze=False, sharex=True)[0]
    for ax, training in zip(axes, trainings, strict=True):
        ax.set_title(training_label(training))
        if training not in norms:
            _empty(ax, "no feature norms")
            continue
        if bins is None:
            _too_wide(ax, norms[training].values())
            continue
        _hist_panel(ax, norms[training], ood, bins, "penultimate feature L2 norm", means=True)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2,
                  frameon=False)
    fig.suptitle(title)
    return fig


def _geometry_figure(
    dists: dict[str, _Scores], logit_norms: dict[str, _Scores], trainings: list[str],
    ood: dict[str, str], title: str,
) -> Figure:
    """Per training (one column each): histograms of the distance to the nearest ID-train
    feature (top row, on one x-axis: every training's features are normalised) and of the
    logit norms (bottom row, each on its own range: trainings scale their logits apart); a
    training without them gets a note."""
    fig = Figure(figsize=(2.2 + 5.0 * len(trainings), 8.6), layout="constrained")
    axes = fig.subplots(2, len(trainings), squeeze=False)
    rows = ((dists, "distance to the nearest ID-train feature (L2-normalised)", True),
            (logit_norms, "logit L2 norm", False))
    for row, (data, xlabel, share) in enumerate(rows):
        shared = _bins(a for sets in data.values() for a in sets.values()) if share and data \
            else None
        for ax, training in zip(axes[row], trainings, strict=True):
            sets = data.get(training)
            if sets is None:
                _empty(ax, "no geometry diagnostics")
                continue
            bins = shared if share else _bins(sets.values())
            if bins is None:
                _too_wide(ax, sets.values())
                continue
            _hist_panel(ax, sets, ood, bins, xlabel)
    for ax, training in zip(axes[0], trainings, strict=True):
        ax.set_title(training_label(training))
    handles = [ax.get_legend_handles_labels() for ax in axes.flat]
    fig.legend(*max(handles, key=_n_handles), loc="outside right upper", fontsize="small",
               frameon=False)
    fig.suptitle(title)
    return fig


def _geometry_summary_figure(geometry: pd.DataFrame, trainings: list[str],
                             title: str) -> Figure:
    """The scatter ratio tr(S_W) / tr(S_B) and the effective rank of the ID test features per
    training: the mean over seeds as a bar, each seed as a point."""
    panels = {RATIO: "tr(S_W) / tr(S_B) (lower = classes apart)",
              ERANK: "effective rank of the features"}
    fig = Figure(figsize=(max(6.5, 2.0 + 1.5 * len(trainings)), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (quantity, label) in zip(axes, panels.items(), strict=True):
        rows = geometry[geometry["quantity"] == quantity].sort_values("seed")
        for i, training in enumerate(trainings):
            values = rows.loc[rows["training"] == training, "value"].to_numpy(dtype=np.float64)
            if not values.size:
                continue
            ax.bar(i, values.mean(), width=0.6, color="0.82", edgecolor="0.45")
            ax.scatter(i + np.linspace(-0.15, 0.15, values.size) * (values.size > 1), values,
                       color=ID_COLOR, s=16, zorder=3)
        ax.set_xticks(np.arange(len(trainings)), [training_label(t) for t in trainings],
                      rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return fig


def _read_geometry(folder: Path) -> pd.DataFrame | None:
    """``folder/geometry.csv`` (None where the results predate it; :func:`read_metrics` has
    checked it against the manifest's hashes)."""
    path = folder / GEOMETRY_FILE
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype={"training": str, "quantity": str, "set": str})
    missing = [c for c in GEOMETRY_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}",
                        "write it again with oodbench run")
    return df


def _plots_only(folder: Path) -> bool:
    """Whether every (visible) file of ``folder`` is a figure :func:`write_plots` writes."""
    return all(_PLOT_FILE.fullmatch(p.name) for p in folder.rglob("*")
               if p.is_file() and not p.name.startswith("."))


def plot_results(results_dir: Path, out_dir: Path | None = None, seed: int = 0) -> list[Path]:
    """:func:`write_plots` into `out_dir` (default ``results_dir / "plots"``), which is
    replaced whole (:func:`~oodbench.fileio.staged`: no figure of an earlier call stays); it
    must not contain `results_dir`, and an existing one must hold only such figures. Returns
    the written paths."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "plots"
    check_export(out, "out", results_dir)
    with staged(out, "out", _plots_only) as stage:
        written = write_plots(results_dir, stage, seed)
    return [out / p.relative_to(stage) for p in written]


def write_plots(results_dir: Path, out: Path, seed: int = 0) -> list[Path]:
    """Write ``hist_<scorer>.png``, ``roc_<scorer>.png``, ``feature_norms.png`` and
    ``geometry.png`` (data of `seed`), ``delta_fpr95.png``, ``delta_fpr95_heatmap.png`` and
    ``geometry_summary.png`` (all seeds) for one benchmark's results into `out`; returns the
    written paths.

    Scorers without scores in any training (failed) get no histogram or ROC figure; the Δ
    figures need at least two trainings; the feature-norm and geometry figures need
    ``_featnorm`` and ``_nn_dist`` / ``_logit_norm`` arrays, the summary ``geometry.csv``
    (older results have none).
    """
    results_dir = Path(results_dir)
    df = read_metrics(results_dir)
    bench = str(df["benchmark"].iloc[0])
    ood = _ood_sets(df)
    scorers = list(dict.fromkeys(s for s in df["scorer"] if s))
    trainings = ordered_trainings(df)
    files = {t: scores_file(results_dir, t, seed) for t in trainings}
    scores = {t: _load_scores(p, [*scorers, *PER_SAMPLE], ood) for t, p in files.items()
              if p.is_file()}
    if not scores:
        raise DataError(f"no scores for seed {seed} in {results_dir / 'scores'}",
                        "plot a seed the run has")
    norms, dists, logit_norms = ({t: s.pop(key) for t, s in scores.items() if key in s}
                                 for key in (FEATNORM, NN_DIST, LOGIT_NORM))
    written = []
    for scorer in scorers:
        if not any(scorer in s for s in scores.values()):
            continue
        for kind, what in (("hist", "score histograms"), ("roc", "ROC curves, ID positive")):
            title = f"{bench} · {scorer}: {what} (seed {seed})"
            fig = _score_figure(kind, scorer, scores, df, ood, title)
            written.append(_save(fig, inside(out, f"{kind}_{scorer}.png")))
    if scorers:
        deltas = {"delta_fpr95": _delta_figure(df, bench),
                  "delta_fpr95_heatmap": _heatmap_figure(df, bench, ood)}
        written += [_save(fig, out / f"{name}.png") for name, fig in deltas.items()
                    if fig is not None]
    if norms:
        title = f"{bench}: penultimate feature L2 norms (seed {seed})"
        written.append(_save(_norm_figure(norms, list(scores), ood, title),
                             out / "feature_norms.png"))
    if dists or logit_norms:
        title = f"{bench}: nearest ID-train distances and logit norms (seed {seed})"
        written.append(_save(_geometry_figure(dists, logit_norms, list(scores), ood, title),
                             out / "geometry.png"))
    geometry = _read_geometry(results_dir)
    if geometry is not None and not geometry.empty:
        n = geometry["seed"].nunique()
        spread = f"mean over {n} seeds (bars), each seed (points)" if n > 1 else "1 seed"
        title = f"{bench}: ID test feature geometry, {spread}"
        written.append(_save(_geometry_summary_figure(geometry, trainings, title),
                             out / "geometry_summary.png"))
    return written
