"""Scoring one model inside an :class:`~oodbench.context.EvalContext`: its cached passes,
every scorer fitted on its ID split (after a grid search where ``scorer_grids`` says so) and
scored on every set, as metric rows, per-sample scores and the parameters each ran with."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from oodbench.adapters import ModelAdapter
from oodbench.config import FIT_KEY, FIT_TRAIN, FIT_VAL
from oodbench.context import EvalContext
from oodbench.data import ImageSet
from oodbench.geometry import diagnose
from oodbench.metrics import (
    ID_ACC,
    OOD_METRICS,
    WARNING,
    accuracy,
    degenerate_note,
    nonfinite_note,
    ood_metrics,
)
from oodbench.progress import ProgressCallback, console, make_progress
from oodbench.scoring import (
    Features,
    Head,
    InputsChanged,
    MapScorer,
    ModelScorer,
    Scorer,
    ScorerFailed,
    create_scorer,
    fit_and_score,
)
from oodbench.threads import job_threads
from oodbench.tuning import VAL_ID, select_params
from oodbench.uncertainty import BOUND_METRICS, bootstrap_bounds, cell_rng


@dataclass
class ModelResult:
    """One checkpoint's metric rows (``metrics.csv``), per-sample scores and diagnostics
    (``scores/*.npz``, float64), the parameters each scorer ran with and its feature-geometry
    rows (``geometry.csv``: :mod:`oodbench.geometry`)."""

    rows: list[dict[str, Any]]
    scores: dict[str, np.ndarray]
    params: dict[str, dict[str, Any]]
    geometry: list[dict[str, Any]]


@dataclass
class _Inputs:
    """What the scorers of one model share: the features of the ID splits they fit on (by
    split name), of the sets they score (the ID test set first), of the validation side
    (``scorer_grids``) and the head."""

    fits: dict[str, Features]
    sets: dict[str, Features]
    val: dict[str, Features]
    head: Head


class _Checkpoint:
    """Scoring one model inside a context: cached passes, and fit + score of one scorer."""

    def __init__(self, ctx: EvalContext, model: ModelAdapter, ckpt_hash: str,
                 progress: ProgressCallback) -> None:
        self.ctx, self.model, self.ckpt_hash, self.progress = ctx, model, ckpt_hash, progress
        self.preprocess = ctx.preprocess

    def features(self, arr: ImageSet, map_scorer: MapScorer | None = None) -> Features:
        ctx = self.ctx
        return ctx.cache.get(self.model, self.ckpt_hash, arr, self.preprocess, ctx.device,
                             ctx.bench.extract_batch, self.progress, map_scorer)

    def model_scores(self, scorer: ModelScorer, arrays: Mapping[str, ImageSet],
                     name: str) -> np.ndarray:
        ctx = self.ctx
        return ctx.cache.scores(self.model, self.ckpt_hash, scorer, arrays[name],
                                self.preprocess, ctx.device, ctx.bench.extract_batch,
                                self.progress)

    def inputs(self) -> _Inputs:
        """The cached passes every scorer of the context shares, and the model's head (a
        copy): read again after a scorer wrote to them (:class:`InputsChanged`)."""
        ctx = self.ctx
        bench, splits = ctx.bench, ctx.splits
        fits = {FIT_TRAIN: self.features(splits.train)}
        if any(bench.fit_split(n) == FIT_VAL for n in bench.scorers):
            fits[FIT_VAL] = self.features(splits.val)
        sets = ({splits.test.name: self.features(splits.test)}
                | {n: self.features(a) for n, a in ctx.ood.sets.items()})
        tuned = any(n in bench.scorer_grids for n in bench.scorers)
        val = ({VAL_ID: self.features(splits.val)}
               | {n: self.features(a) for n, a in ctx.val_ood.sets.items()} if tuned else {})
        return _Inputs(fits, sets, val, Head.from_linear(self.model.fc))

    def fit_score(self, scorer: Scorer, fit: tuple[ImageSet, Features], head: Head,
                  sets: Mapping[str, Features],
                  arrays: Mapping[str, ImageSet]) -> dict[str, np.ndarray]:
        """Fit once on ``fit`` (an ID split and its features), score every set (a model scorer
        by passes of its own over the images; a map scorer on its reductions of the feature
        map, from passes of its own, cached)."""
        split, train = fit
        if isinstance(scorer, MapScorer):
            train = self.features(split, scorer)
            sets = {name: self.features(arrays[name], scorer) for name in sets}
        score_set = (partial(self.model_scores, scorer, arrays)
                     if isinstance(scorer, ModelScorer) else None)
        return fit_and_score(scorer, train, head, sets, score_set)


def _grid_record(ctx: EvalContext, trials: list[dict[str, Any]]) -> dict[str, Any]:
    val_names = ", ".join(ctx.val_ood.sets)
    return {"selected_on": f"ID val ({len(ctx.splits.val.labels)} images) vs {val_names}",
            "rule": "lowest mean FPR95, ties by highest mean AUROC", "trials": trials}


def _score_one(
    run: _Checkpoint, name: str, inputs: _Inputs, arrays: dict[str, ImageSet],
) -> tuple[dict[str, np.ndarray], dict[str, Any], str, bool]:
    """(scores per set, parameters and fit facts, failure note, whether it changed
    ``inputs``) of one scorer, fitted on its ID split; a failure leaves no scores and a note,
    and the matrix goes on."""
    bench = run.ctx.bench
    split = bench.fit_split(name)
    fit = (getattr(run.ctx.splits, split), inputs.fits[split])
    head, sets, val = inputs.head, inputs.sets, inputs.val
    values = dict(bench.scorer_params.get(name, {}))
    params: dict[str, Any] = {}
    try:
        if name in bench.scorer_grids:
            val_arrays = {VAL_ID: run.ctx.splits.val} | run.ctx.val_ood.sets

            def trial(candidate: dict[str, Any]) -> dict[str, np.ndarray]:
                scorer = create_scorer(name, **(values | candidate))
                return run.fit_score(scorer, fit, head, val, val_arrays)

            chosen, trials = select_params(bench.scorer_grids[name], trial,
                                           list(run.ctx.val_ood.sets))
            values |= chosen
        scorer = create_scorer(name, **values)
        params = scorer.get_params() | {FIT_KEY: split}
        if name in bench.scorer_grids:
            params["grid_search"] = _grid_record(run.ctx, trials)
        start = time.perf_counter()
        out = run.fit_score(scorer, fit, head, sets, arrays)
        params |= scorer.fit_summary()
        params["seconds"] = round(time.perf_counter() - start, 3)
        return out, params, "", False
    except ScorerFailed as e:
        return {}, params, e.reason, False
    except InputsChanged as e:
        return {}, params, f"{e.reason}; the other scorers get them as extracted", True


def score_model(ctx: EvalContext, model: ModelAdapter, ckpt_hash: str, training: str,
                seed: int) -> ModelResult:
    """Score one model with every scorer of ``ctx.bench``.

    Each scorer is fitted on its ID split (``scorer_fit``: ID-train unless it says ID-val).
    Scorers with a grid in ``scorer_grids`` first pick their parameters on ID-validation vs
    the validation OOD sets (:mod:`oodbench.tuning`); the test sets are scored once, with the
    choice. The model is not changed (extraction works on a prepared copy). A failed
    scorer's rows hold NaN and its failure as ``note``; a scorer whose scores on ID test + an
    OOD set are degenerate (:func:`oodbench.metrics.degenerate_note`) keeps its values, with
    the warning as the rows' ``note``, in its parameters' ``warnings`` and on the console.
    A scorer that writes to the features, logits, labels or head it shares with the others
    fails (:class:`~oodbench.scoring.InputsChanged`), and the next scorers get them read
    again; ID accuracy fails, counting them, where ID test logits are not finite.
    It runs on the torch threads of ``resources.eval`` (:mod:`oodbench.threads`).
    """
    with job_threads(ctx.bench.resources.eval):
        return _scored(ctx, model, ckpt_hash, training, seed)


def _scored(ctx: EvalContext, model: ModelAdapter, ckpt_hash: str, training: str,
            seed: int) -> ModelResult:
    """:func:`score_model`'s work."""
    bench, splits = ctx.bench, ctx.splits
    id_name = splits.test.name  # the benchmark's ID set, or one a caller gave
    with make_progress(transient=True) as prog:
        run = _Checkpoint(ctx, model, ckpt_hash, prog)
        inputs = run.inputs()
    test = inputs.sets[id_name]
    arrays = {id_name: splits.test} | ctx.ood.sets
    base = {"benchmark": bench.name, "training": training, "seed": seed}
    # non-finite logits have no argmax: ID accuracy is a failed cell that counts them
    acc_failure = nonfinite_note(test.logits, f"ID test set {id_name!r}")
    # diagnostics beside the scores: feature and logit norms, nearest ID-train distances
    samples, geometry = diagnose(inputs.fits[FIT_TRAIN], inputs.sets, id_name)
    result = ModelResult(
        rows=[base | {"scorer": "", "ood_set": "", "group": "", "metric": ID_ACC,
                      "value": float("nan") if acc_failure
                      else accuracy(test.logits, test.labels), "note": acc_failure}],
        scores=samples, params={}, geometry=[base | row for row in geometry])
    if acc_failure:
        console.print(f"[red]ID accuracy failed[/red] ({training} s{seed}): {acc_failure}",
                      soft_wrap=True)
    with make_progress(transient=True) as prog:
        run.progress = prog
        task = prog.add_task(f"score {training} s{seed}", total=len(bench.scorers), stats="")
        for name in bench.scorers:
            prog.update(task, stats=name)
            out, params, failure, changed = _score_one(run, name, inputs, arrays)
            if changed:  # the next scorers get the passes as extracted, not as it left them
                inputs = run.inputs()
            _record(result, ctx, base, name, out, params, failure)
            prog.advance(task)
    return result


def _record(result: ModelResult, ctx: EvalContext, base: dict[str, Any], name: str,
            out: dict[str, np.ndarray], params: dict[str, Any], failure: str) -> None:
    """Add one scorer's parameters, metric rows and scores to ``result``: a failed scorer's
    rows carry its failure; a degenerate one's keep their values, with the warning. Each
    OOD set's rows hold its metrics, then the bounds of its bootstrap intervals
    (:mod:`oodbench.uncertainty`, settings from the benchmark's ``stats``)."""
    training, seed, id_name = base["training"], base["seed"], ctx.splits.test.name
    stats = ctx.bench.stats
    result.params[name] = params
    if failure:
        console.print(f"[red]scorer {name} failed[/red] ({training} s{seed}): {failure}",
                      soft_wrap=True)
    notes = {s: failure or degenerate_note(out[id_name], out[s]) for s in ctx.ood.sets}
    warned = [f"{s}: {n.removeprefix(WARNING)}" for s, n in notes.items() if n and not failure]
    if warned:
        params["warnings"] = warned
        console.print(f"[yellow]warning: scorer {name} gives degenerate scores[/yellow] "
                      f"({training} s{seed}): {'; '.join(warned)}", soft_wrap=True)
    for set_name in ctx.ood.sets:
        if out:
            ids, oods = out[id_name], out[set_name]
            rng = cell_rng(stats.bootstrap_seed,
                           [base["benchmark"], training, seed, name, set_name])
            metrics = ood_metrics(ids, oods) | bootstrap_bounds(
                ids, oods, stats.bootstrap_resamples, stats.level, rng)
        else:
            metrics = dict.fromkeys((*OOD_METRICS, *BOUND_METRICS), float("nan"))
        result.rows += [base | {"scorer": name, "ood_set": set_name,
                                "group": ctx.ood.groups[set_name], "metric": m, "value": v,
                                "note": notes[set_name]} for m, v in metrics.items()]
    result.scores |= {f"{name}/{s}": v for s, v in out.items()}
