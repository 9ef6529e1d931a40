"""OpenOOD v1.5's protocol: its result format, its metric formulas and its postprocessor
settings, so oodbench numbers can sit beside its leaderboard.

The one place that names OpenOOD's rows, columns, files and postprocessors. What is matched, and
where it was read (github.com/Jingkang50/OpenOOD; the files as stored in a public code index):

- ``scripts/eval_ood.py`` (commit 0ad2b93): one evaluation per checkpoint folder ``<root>/s*``
  (the training seeds, sorted); the per-seed tables are stacked, and each cell becomes
  ``"{mean:.2f} ± {std:.2f}"`` with ``np.mean`` / ``np.std`` over seeds (population std,
  ddof=0; a single seed reads ``"± 0.00"``). With ``--save-csv`` the table is written by
  ``DataFrame.to_csv`` to ``<root>/ood/<postprocessor>.csv``: the index (dataset names) is the
  first column and has no label, so the header starts with an empty cell. ``<postprocessor>``
  is OpenOOD's name of the method (:data:`POSTPROCESSORS`: ``ebo`` for ``energy``, ``mds`` for
  ``mahalanobis``, ``mls`` for ``maxlogit``, the others as oodbench's); a scorer OpenOOD has no
  postprocessor for keeps oodbench's name, its ``postprocessor`` in the long CSV is empty, and
  the export warns about it.
- ``openood/evaluation_api/evaluator.py``, ``Evaluator.eval_ood`` / ``_eval_ood``: rows are
  the near-OOD datasets in the benchmark's order, then ``nearood``, the far-OOD datasets,
  then ``farood``; each mean row is ``np.mean`` over that group's per-set metrics (fractions,
  per seed), and only then is every row multiplied by 100 (the order matters in the last
  digit); ``ACC`` is the ID test accuracy (in percent) written into every row, the mean rows
  included. Columns: ``FPR@95, AUROC, AUPR_IN, AUPR_OUT, ACC``. Some stored commits of this
  file (0ad2b93, e7a568b) carry four classification-rate columns ``CCR_4 ... CCR_1`` before
  ``ACC``; the v1.5 metrics code (``openood/evaluators/metrics.py``, commit a59cdac, whose
  ``compute_all_metrics`` returns ``[fpr, auroc, aupr_in, aupr_out, accuracy]``) and the
  leaderboard have the five above, which is what is written here (oodbench has no CCR).
- ``openood/evaluators/metrics.py`` (commit a59cdac), ``auc_and_fpr_recall``, copied by
  :func:`openood_metrics` and applied to the per-sample scores of the results folder
  (``scores/*.npz``), not to ``metrics.csv``: OOD is the positive class and the confidence is
  negated; ``roc_curve`` keeps scikit-learn's default ``drop_intermediate=True``; ``FPR@95`` is
  the FPR at the first point of that curve with TPR >= 0.95 (under ties it can differ from
  :data:`~oodbench.metrics.FPR95_OODPOS`, which keeps every point); AUROC is ``auc`` of that
  curve; AUPR_IN / AUPR_OUT are ``auc(recall, precision)`` of ``precision_recall_curve`` (the
  trapezoid under the PR curve, ID resp. OOD positive; oodbench's ``aupr_in`` / ``aupr_out``
  are average precision).
- The settings (:data:`POSTPROCESSORS`): each postprocessor's ``postprocessor_args`` in
  ``configs/postprocessors/<name>.yml``, the ID split its ``setup`` fits on (``val`` for
  ReAct and KLM, ``train`` for the rest), and ASH-B, the variant OpenOOD applies
  (``openood/networks/ash_net.py``). A benchmark with ``protocol = "openood-v1.5"`` takes them
  under its own ``scorer_params`` / ``scorer_fit`` (:func:`protocol_settings`), and its
  manifest says, per scorer, where it differs (:func:`protocol_record`). Not taken: the
  automatic parameter search of the configs with ``APS_mode: True`` (OpenOOD picks from
  ``postprocessor_sweep`` the value with the best AUROC on its ID-val vs OOD-val sets; the
  presets use ``postprocessor_args``).

oodbench's choices where OpenOOD has nothing to match: only the OOD groups ``near`` and
``far`` enter, in the order of the metrics frame (the benchmark's order of its OOD sets);
other groups (``sanity``, ``extra``, ``csid``, none) are oodbench's own rows and are left out.
A failed cell (NaN in ``metrics.csv``) reads ``"failed"`` and a cell some seed lacks reads
``"—"`` (OpenOOD would print ``nan``); a mean row is failed or missing when any of its sets
is. Besides the per-scorer files, one long CSV (:data:`LONG_FILE`) holds every number plain.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from oodbench.config import FIT_KEY, FIT_TRAIN, FIT_VAL
from oodbench.errors import DataError
from oodbench.fileio import atomic_write_text, check_export, inside, staged
from oodbench.manifest import MANIFEST_FILE, scores_file
from oodbench.metrics import COLUMNS, FAILED, ID_ACC, MISSING, RECALL
from oodbench.scoring import create_scorer

if TYPE_CHECKING:
    from oodbench.config import Benchmark

OPENOOD_V15 = "openood-v1.5"
PROTOCOLS = (OPENOOD_V15,)
MANIFEST_KEY = "protocol"  # the manifest's account of a benchmark's protocol
COL_FPR95, COL_AUROC, COL_AUPR_IN, COL_AUPR_OUT = "FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT"
METRICS = (COL_FPR95, COL_AUROC, COL_AUPR_IN, COL_AUPR_OUT)  # OpenOOD's metric columns
ACC = "ACC"  # the ID accuracy, OpenOOD's last column
GROUPS = {"near": "nearood", "far": "farood"}  # oodbench group -> OpenOOD's mean row
LONG_FILE = "openood-v1.5-long.csv"  # every (training, scorer) table in one long CSV
LONG_COLUMNS = ("training", "scorer", "postprocessor", "dataset", "group", "column", "mean",
                "std", "n_seeds")


@dataclass(frozen=True)
class Postprocessor:
    """OpenOOD v1.5's counterpart of an oodbench scorer: its name (its CSV file's), its
    ``postprocessor_args`` as the scorer's parameters, and the ID split its ``setup`` fits on."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    fit: str = FIT_TRAIN


# oodbench scorer -> OpenOOD v1.5's postprocessor (configs/postprocessors/<name>.yml)
POSTPROCESSORS: dict[str, Postprocessor] = {
    "msp": Postprocessor("msp"),
    "maxlogit": Postprocessor("mls"),
    "energy": Postprocessor("ebo", {"temperature": 1.0}),
    "gen": Postprocessor("gen", {"gamma": 0.1, "M": 100}),
    "klm": Postprocessor("klm", fit=FIT_VAL),
    "gradnorm": Postprocessor("gradnorm", {"temperature": 1.0}),  # no temperature there: 1
    "react": Postprocessor("react", {"percentile": 90.0}, fit=FIT_VAL),
    "ash": Postprocessor("ash", {"variant": "b", "percentile": 90.0}),  # ash_net.py: ASH-B
    "scale": Postprocessor("scale", {"percentile": 85.0}),
    "dice": Postprocessor("dice", {"p": 90.0}),
    "vim": Postprocessor("vim", {"dim": 256}),
    "knn": Postprocessor("knn", {"k": 50, "alpha": 1.0}),  # the whole ID-train set
    "nnguide": Postprocessor("nnguide", {"k": 100, "alpha": 0.01}),
    "mahalanobis": Postprocessor("mds"),
    "rmds": Postprocessor("rmds"),
    "she": Postprocessor("she"),
    "fdbd": Postprocessor("fdbd", {"distance_as_normalizer": True}),
    "odin": Postprocessor("odin", {"temperature": 1000.0, "noise": 0.0014}),
}


def file_name(scorer: str) -> str:
    """The name of a scorer's OpenOOD-format CSV: OpenOOD's postprocessor name, else its own."""
    post = POSTPROCESSORS.get(scorer)
    return post.name if post else scorer


def protocol_settings(
    scorer_params: Mapping[str, Mapping[str, Any]], scorer_fit: Mapping[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``scorer_params`` and ``scorer_fit`` with OpenOOD v1.5's settings under them (a
    benchmark's own values win)."""
    params = {name: dict(post.params) for name, post in POSTPROCESSORS.items() if post.params}
    for name, own in scorer_params.items():
        params[name] = {**params.get(name, {}), **own}
    fits = {name: post.fit for name, post in POSTPROCESSORS.items() if post.fit != FIT_TRAIN}
    return params, {**fits, **scorer_fit}


def differences(scorer: str, params: Mapping[str, Any], fit: str) -> list[str]:
    """Where a scorer's parameters (as ``get_params`` or a manifest gives them) and fit split
    differ from its OpenOOD v1.5 postprocessor's; empty where they match."""
    post = POSTPROCESSORS[scorer]
    out = [f"{key} = {params.get(key)!r} (OpenOOD: {value!r})"
           for key, value in post.params.items() if params.get(key) != value]
    if fit != post.fit:
        out.append(f"fitted on ID-{fit} (OpenOOD: ID-{post.fit})")
    return out


def protocol_record(bench: Benchmark) -> dict[str, Any]:
    """The manifest's account (:data:`MANIFEST_KEY`) of ``bench.protocol``: per scorer of the
    matrix, OpenOOD's postprocessor, its settings and how the benchmark's differ (``"as
    OpenOOD v1.5"`` where they do not)."""
    scorers: dict[str, Any] = {}
    for name in bench.scorers:
        post = POSTPROCESSORS.get(name)
        if post is None:
            scorers[name] = {"postprocessor": None,
                             "note": "OpenOOD v1.5 has no such postprocessor"}
            continue
        params = create_scorer(name, **bench.scorer_params.get(name, {})).get_params()
        diff = differences(name, params, bench.fit_split(name))
        scorers[name] = {"postprocessor": post.name,
                         "openood": {**post.params, FIT_KEY: post.fit},
                         "note": "; ".join(diff) if diff else "as OpenOOD v1.5"}
    return {"name": bench.protocol, "scorers": scorers}


def openood_metrics(id_scores: ArrayLike, ood_scores: ArrayLike) -> dict[str, float]:
    """OpenOOD v1.5's FPR@95, AUROC, AUPR_IN and AUPR_OUT (fractions) of ID against OOD scores
    (higher = more ID), computed as its ``auc_and_fpr_recall`` computes them."""
    ids, oods = np.asarray(id_scores), np.asarray(ood_scores)
    conf = np.concatenate([ids, oods])
    ood = np.concatenate([np.zeros(ids.size, np.int64), np.ones(oods.size, np.int64)])
    fpr, tpr, _ = roc_curve(ood, -conf)
    precision_in, recall_in, _ = precision_recall_curve(1 - ood, conf)
    precision_out, recall_out, _ = precision_recall_curve(ood, -conf)
    return {COL_FPR95: float(fpr[np.argmax(tpr >= RECALL)]), COL_AUROC: float(auc(fpr, tpr)),
            COL_AUPR_IN: float(auc(recall_in, precision_in)),
            COL_AUPR_OUT: float(auc(recall_out, precision_out))}


def _pair(scores: Mapping[str, np.ndarray], scorer: str, ood_set: str, ood_sets: set[str],
          path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ID test scores, ``ood_set``'s scores) of ``scorer`` in a scores file; the ID set is the
    one set of the scorer there that is not an OOD set."""
    sets = [key.partition("/")[2] for key in scores if key.partition("/")[0] == scorer]
    id_sets = [s for s in sets if s not in ood_sets]
    if len(id_sets) != 1 or ood_set not in sets:
        raise DataError(f"{path}: no scores of scorer {scorer!r} on the ID set and {ood_set!r} "
                        f"(its sets there: {', '.join(sets) or 'none'})",
                        "write the scores again with oodbench run")
    return scores[f"{scorer}/{id_sets[0]}"], scores[f"{scorer}/{ood_set}"]


def openood_cells(df: pd.DataFrame, folder: Path | str) -> pd.DataFrame:
    """A metrics frame (``metrics.csv``, columns :data:`~oodbench.metrics.COLUMNS`) in
    OpenOOD's terms: per near- or far-OOD cell one row per OpenOOD metric (:data:`METRICS`,
    a fraction from :func:`openood_metrics` on the per-sample scores
    ``folder/scores/<training>-s<seed>.npz``; NaN where the cell failed), and per training
    and seed one :data:`ACC` row (the ID accuracy)."""
    rows: list[dict[str, Any]] = []
    ood_sets = set(df.loc[df["scorer"] != "", "ood_set"])
    for (training, seed), part in df.groupby(["training", "seed"], sort=False):
        base = {"benchmark": part["benchmark"].iloc[0], "training": training, "seed": seed,
                "note": ""}
        acc = part.loc[part["metric"] == ID_ACC, "value"]
        if len(acc):
            rows.append(base | {"scorer": "", "ood_set": "", "group": "", "metric": ACC,
                                "value": float(acc.iloc[-1])})
        cells = part[part["group"].isin(list(GROUPS)) & (part["scorer"] != "")]
        if cells.empty:
            continue
        path = scores_file(Path(folder), training, seed)
        if not path.is_file():
            raise DataError(f"{path} not found: OpenOOD's metrics are computed from the "
                            "per-sample scores", "run the benchmark again into this folder")
        with np.load(path) as scores:
            for (scorer, ood_set, group), cell in cells.groupby(["scorer", "ood_set", "group"],
                                                                sort=False):
                values = (dict.fromkeys(METRICS, np.nan) if cell["value"].isna().any() else
                          openood_metrics(*_pair(scores, scorer, ood_set, ood_sets, path)))
                rows += [base | {"scorer": scorer, "ood_set": ood_set, "group": group,
                                 "metric": m, "value": v} for m, v in values.items()]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _layout(cells: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """(group, mean row, sets in order) for each of ``GROUPS`` that `cells` have."""
    out = []
    for group, mean_row in GROUPS.items():
        sets = list(dict.fromkeys(cells.loc[cells["group"] == group, "ood_set"]))
        if sets:
            out.append((group, mean_row, sets))
    return out


def _stack(cells: pd.DataFrame, training: str,
           scorer: str) -> tuple[list[int], list[str], list[str], np.ndarray, np.ndarray]:
    """Seeds, row labels, row groups, values (seed x row x column, percent; NaN where failed
    or missing) and presence (False where missing) of one training and scorer of
    :func:`openood_cells`."""
    part = cells[cells["training"] == training]
    ood = part[(part["scorer"] == scorer) & part["group"].isin(list(GROUPS))]
    layout = _layout(ood)
    if not layout:
        raise DataError(f"no near or far OOD rows for training {training!r}, scorer "
                        f"{scorer!r}", "OpenOOD's table has only near- and far-OOD sets: "
                        "give the benchmark's OOD sets group = \"near\" or \"far\"")
    labels = [x for _, mean_row, sets in layout for x in (*sets, mean_row)]
    groups = [group for group, _, sets in layout for _ in range(len(sets) + 1)]
    seeds = sorted(int(s) for s in part["seed"].unique())
    values = np.full((len(seeds), len(labels), len(METRICS) + 1), np.nan)
    present = np.zeros(values.shape, dtype=bool)
    for i, seed in enumerate(seeds):
        here = ood[ood["seed"] == seed].drop_duplicates(["ood_set", "metric"], keep="last")
        table = here.pivot(index="ood_set", columns="metric", values="value")
        have = set(zip(here["ood_set"], here["metric"], strict=True))
        row = 0
        for _, _, sets in layout:
            block = table.reindex(index=sets, columns=list(METRICS)).to_numpy(dtype=float)
            mask = np.array([[(s, m) in have for m in METRICS] for s in sets])
            n = len(sets)
            # as OpenOOD: the group's mean of the fractions first, then every row x 100
            values[i, row:row + n + 1, :-1] = np.concatenate(
                [block, block.mean(axis=0, keepdims=True)]) * 100
            present[i, row:row + n, :-1] = mask
            present[i, row + n, :-1] = mask.all(axis=0)
            row += n + 1
        acc = part.loc[(part["seed"] == seed) & (part["metric"] == ACC), "value"]
        if len(acc):
            values[i, :, -1], present[i, :, -1] = float(acc.iloc[-1]) * 100, True
    return seeds, labels, groups, values, present


def seed_frames(cells: pd.DataFrame, training: str, scorer: str) -> dict[int, pd.DataFrame]:
    """Per seed, OpenOOD's numeric table (percent) of one training and scorer of
    :func:`openood_cells`; NaN where a cell failed or the seed lacks it."""
    seeds, labels, _, values, _ = _stack(cells, training, scorer)
    return {s: pd.DataFrame(values[i], index=labels, columns=[*METRICS, ACC])
            for i, s in enumerate(seeds)}


def openood_frame(cells: pd.DataFrame, training: str, scorer: str, seed: int | None = None,
                  std: bool = False) -> pd.DataFrame:
    """OpenOOD's numeric table (percent) of one training and scorer: one `seed`'s, or (None)
    the mean over seeds (`std`: the population std, as OpenOOD's). NaN where a cell failed
    or some seed lacks it."""
    seeds, labels, _, values, present = _stack(cells, training, scorer)
    if seed is not None:
        if seed not in seeds:
            raise DataError(f"training {training!r} has no seed {seed}",
                            f"its seeds: {', '.join(map(str, seeds))}")
        values, present = values[[seeds.index(seed)]], present[[seeds.index(seed)]]
    stat = values.std(axis=0) if std else values.mean(axis=0)
    return pd.DataFrame(np.where(present.all(axis=0), stat, np.nan), index=labels,
                        columns=[*METRICS, ACC])


def openood_table(cells: pd.DataFrame, training: str, scorer: str) -> pd.DataFrame:
    """OpenOOD's CSV table of one training and scorer: ``"mean ± std"`` over seeds, two
    decimals (``"failed"`` / ``"—"`` for a failed / missing cell)."""
    _, labels, _, values, present = _stack(cells, training, scorer)
    mean, std = values.mean(axis=0), values.std(axis=0)
    text = np.char.add(np.char.add(np.char.mod("%.2f", mean), " \u00b1 "),
                       np.char.mod("%.2f", std)).astype(object)
    text[np.isnan(mean)] = FAILED
    text[~present.all(axis=0)] = MISSING
    return pd.DataFrame(text, index=labels, columns=[*METRICS, ACC])


def _pairs(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(training, scorer) with near or far rows, trainings and scorers in order of appearance."""
    ood = cells[cells["group"].isin(list(GROUPS))]
    scorers = [s for s in dict.fromkeys(ood["scorer"]) if s]
    have = set(zip(ood["training"], ood["scorer"], strict=True))
    return [(t, s) for t in dict.fromkeys(cells["training"]) for s in scorers if (t, s) in have]


def openood_long(cells: pd.DataFrame) -> pd.DataFrame:
    """Every (training, scorer) table of :func:`openood_cells` as one long frame
    (:data:`LONG_COLUMNS`): one row per dataset or mean row and OpenOOD column, mean and
    population std over seeds in percent."""
    records = []
    for training, scorer in _pairs(cells):
        seeds, labels, groups, values, present = _stack(cells, training, scorer)
        ok = present.all(axis=0)
        mean = np.where(ok, values.mean(axis=0), np.nan)
        std = np.where(ok, values.std(axis=0), np.nan)
        post = POSTPROCESSORS[scorer].name if scorer in POSTPROCESSORS else ""
        for r, (label, group) in enumerate(zip(labels, groups, strict=True)):
            for c, column in enumerate([*METRICS, ACC]):
                records.append((training, scorer, post, label, group, column, mean[r, c],
                                std[r, c], len(seeds)))
    return pd.DataFrame(records, columns=list(LONG_COLUMNS))


def _warn(folder: Path, scorers: list[str]) -> None:
    """Warn about what makes a results folder's OpenOOD-format files not OpenOOD's: near or
    far sets that were skipped (its nearood / farood rows then average other sets), scorers
    OpenOOD has no postprocessor for, and settings that differ from OpenOOD's."""
    foreign = [s for s in scorers if s not in POSTPROCESSORS]
    if foreign:
        warnings.warn(f"OpenOOD v1.5 has no postprocessor for {', '.join(foreign)}: "
                      "their files keep oodbench's names", stacklevel=3)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return
    manifest = json.loads(path.read_text())
    sets = manifest.get("config", {}).get("ood", [])
    skipped = manifest.get("skipped_ood_sets", {})
    lost = [f"{s['name']} ({s['group']})" for s in sets
            if s.get("group") in GROUPS and s.get("name") in skipped]
    if lost:
        warnings.warn(f"{folder}: the OOD set(s) {', '.join(lost)} were skipped in this run, "
                      "so its nearood / farood rows are means over fewer sets than "
                      "OpenOOD's", stacklevel=3)
    fits = manifest.get("config", {}).get("scorer_fit", {})
    found: dict[str, list[str]] = {}
    for params in manifest.get("scorer_params", {}).values():
        for name, given in params.items():
            if name in scorers and name in POSTPROCESSORS:
                fit = given.get(FIT_KEY, fits.get(name, FIT_TRAIN))
                found.setdefault(name, differences(name, given, fit))
    unlike = [f"{name}: {', '.join(diff)}" for name, diff in found.items() if diff]
    if unlike:
        warnings.warn(f"{folder}: these scorers ran with other settings than OpenOOD v1.5's "
                      f"postprocessors, whose names their files carry: {'; '.join(unlike)}",
                      stacklevel=3)


def write_openood_csvs(metrics: pd.DataFrame, folder: Path | str, out: Path | str
                       ) -> list[Path]:
    """Write every (training, scorer) table of a results folder (``metrics``: its metrics as
    :func:`~oodbench.report.read_metrics` reads and checks them; its scores read by
    :func:`openood_cells`) as
    ``out/<training>/ood/<postprocessor>.csv`` (OpenOOD's ``<root>/ood/<postprocessor>.csv``;
    :func:`file_name`), then ``out/`` :data:`LONG_FILE`; returns the files written, in that
    order. ``out`` is replaced whole (:func:`~oodbench.fileio.staged`), so no file of an
    earlier export stays; it must not contain ``folder``, and an existing ``out`` must be such
    an export (hold :data:`LONG_FILE`)."""
    folder = Path(folder)
    cells = openood_cells(metrics, folder)
    pairs = _pairs(cells)
    if not pairs:
        raise DataError("the metrics hold no near- or far-OOD rows",
                        "OpenOOD's table has only near- and far-OOD sets: give the "
                        "benchmark's OOD sets group = \"near\" or \"far\"")
    scorers = list(dict.fromkeys(s for _, s in pairs))
    by_file: dict[str, str] = {}
    for scorer in scorers:
        other = by_file.setdefault(file_name(scorer), scorer)
        if other != scorer:
            raise DataError(f"scorers {other!r} and {scorer!r} would both be written as "
                            f"{file_name(scorer)}.csv", "rename the plugin scorer")
    _warn(folder, scorers)
    target = Path(out)
    check_export(target, "out", folder)
    with staged(target, "out", lambda old: (old / LONG_FILE).is_file()) as stage:
        written = []
        for training, scorer in pairs:
            path = inside(stage, training, "ood", f"{file_name(scorer)}.csv")
            atomic_write_text(path, openood_table(cells, training, scorer).to_csv())
            written.append(path)
        path = inside(stage, LONG_FILE)
        atomic_write_text(path, openood_long(cells).to_csv(index=False, float_format="%.6g"))
    return [target / p.relative_to(stage) for p in [*written, path]]
