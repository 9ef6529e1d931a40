"""Cross-check oodbench's scorers against pytorch-ood's detectors on the same cached features.

    python benchmarks/crosscheck_pytorch_ood.py [--benchmark fmnist] [--data-root DIR]
        [--runs-dir runs] [--checkpoint PATH | --training ce --seed 0] [--out FILE]

Loads one trained checkpoint of the benchmark, reads its ID-train, ID-test and OOD features from
the feature cache (a forward pass only where an entry is missing), then scores every set with
each scorer that both libraries implement, with matched settings, and reports per scorer the
Spearman rank correlation of the two libraries' scores over ID-test + all OOD sets and the
largest |AUROC difference| over the OOD sets. pytorch-ood scores outliers high, oodbench scores
ID high, so pytorch-ood's scores are negated before comparing. Writes a Markdown report
(default ``results/crosscheck_pytorch_ood.md``). The mapping of each shared scorer to its
pytorch-ood detector and settings (``pod_settings``, ``pod_detector``) is also the one
``benchmarks/perf.py`` times, around a whole model.

Not a test and not a dependency of oodbench: it needs ``pytorch-ood``, installed without
letting pip change torch / torchvision::

    .venv/bin/pip install --no-deps pytorch-ood

(its other requirements, numpy, scipy and typing_extensions, come with oodbench).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from oodbench.check import load_benchmark
from oodbench.checkpoint import load_checkpoint
from oodbench.data import ImageArray, Preprocess
from oodbench.extract import FeatureCache
from oodbench.fileio import file_hash
from oodbench.metrics import auroc
from oodbench.oodsets import load_ood_sets
from oodbench.scoring import Features, Head, create_scorer, fit_and_score
from oodbench.train import Trainer

AGREE_SPEARMAN = 0.999
AGREE_AUROC = 0.001
INSTALL_HINT = (
    "pytorch-ood is not installed. Install it without touching torch/torchvision:\n"
    "    .venv/bin/pip install --no-deps pytorch-ood\n"
    "(numpy, scipy and typing_extensions, its other requirements, are already installed)."
)

SHARED = ("msp", "energy", "maxlogit", "knn", "mahalanobis", "react", "ash", "dice", "vim",
          "klm", "she", "rmds", "gen", "scale", "fdbd", "nnguide", "gradnorm")
NOT_SHARED = [
    "odin (input-level in both libraries: it needs input gradients, not cached features)",
    "fdbd with distance_as_normalizer=False and nnguide with alpha < 1 (pytorch-ood has no "
    "such setting)",
    "pytorch-ood detectors without an oodbench counterpart: Entropy, WeightedEBO, "
    "TemperatureScaling, MahalanobisODIN, MultiMahalanobis, GMM, Gram, LTS, NCI, NACUE, VRA, "
    "RankFeat, MCD, MCM, OpenMax, PNML, GradUncertainty",
]

# a fitted pytorch-ood scorer: the Features of one set -> outlier scores (higher = more OOD)
PodScore = Callable[[Features], torch.Tensor]


@dataclass
class Case:
    """One scorer present in both libraries, with matched settings."""

    scorer: str  # oodbench registry name
    params: dict[str, Any]  # oodbench parameters (defaults unless the benchmark overrides)
    call: str  # the pytorch-ood detector and its settings, for the report
    build: Callable[[Features, Head, nn.Linear], PodScore]  # fit pytorch-ood, return a scorer
    same: str  # formula-level differences that cannot change the ranking
    differ: str  # what can make the rankings differ, and which one follows the paper
    # optional: pytorch-ood's formula with ``differ``'s cause removed, to confirm the reason
    diagnose: tuple[str, Callable[[Features, Head, nn.Linear], PodScore]] | None = None


def _linear(head: Head) -> nn.Linear:
    """A ``torch.nn.Linear`` holding the checkpoint's classifier head."""
    out_dim, in_dim = head.weight.shape
    layer = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        layer.weight.copy_(head.weight)
        layer.bias.copy_(head.bias)
    return layer.eval().requires_grad_(False)


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             size: int = 4096) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in row chunks and concatenate (bounds peak memory)."""
    with torch.no_grad():
        return torch.cat([fn(part) for part in x.split(size)])


def _as_maps(x: torch.Tensor) -> torch.Tensor:
    """Pooled N x D features as N x D x 1 x 1 feature maps (pytorch-ood's 4-D detectors)."""
    return x[:, :, None, None]


def _gen_unclamped(gamma: float, m: int) -> Callable[[Features, Head, nn.Linear], PodScore]:
    """pytorch-ood's ``GEN.score`` in float64 without its clamp of p to [1e-7, 1 - 1e-7]."""

    def build(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
        def score(d: Features) -> torch.Tensor:
            p = d.logits.double().softmax(dim=1).sort(dim=1, descending=True).values[:, :m]
            return (p.pow(gamma) * (1 - p).pow(gamma)).mean(dim=1)

        return score

    return build


@dataclass(frozen=True)
class Wrapped:
    """What pytorch-ood's detectors wrap. ``model`` and ``encoder`` are ``None`` where only
    their feature- and logit-level methods are called (``fit_features``, ``predict_logits``)."""

    model: Callable[[torch.Tensor], torch.Tensor] | None  # inputs -> logits
    encoder: Callable[[torch.Tensor], torch.Tensor] | None  # inputs -> N x D pooled features
    backbone: Callable[[torch.Tensor], torch.Tensor]  # inputs -> feature maps (ReAct, ASH, SCALE)
    head: nn.Linear  # the classifier: N x D features -> logits
    grad_model: nn.Module  # what GradNorm differentiates (the model, or the head alone) ...
    grad_param: str  # ... with respect to this parameter of it (the head's weight)


def feature_level(head: nn.Linear) -> Wrapped:
    """The parts for scoring extracted features: no model, the head, identity feature maps."""
    return Wrapped(None, None, nn.Identity(), head, head, "weight")


def pod_settings(n_dims: int, params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """pytorch-ood's settings of the detector of each of ``SHARED``, matching the oodbench
    ``params`` (``get_params()`` of each scorer) on ``n_dims``-dimensional features."""
    if not params["fdbd"]["distance_as_normalizer"]:
        raise ValueError("pytorch-ood's fDBD always normalises by the distance to the train mean")
    if params["nnguide"]["alpha"] != 1.0:
        raise ValueError("pytorch-ood's NNGuide is fitted on the full ID-train set; use alpha=1")
    return {
        "msp": {}, "energy": {"t": params["energy"]["temperature"]}, "maxlogit": {},
        "knn": {"k": params["knn"]["k"], "normalize": True}, "mahalanobis": {},
        "react": {"percentile": params["react"]["percentile"] / 100},
        "ash": {"variant": f"ash-{params['ash']['variant']}",
                "percentile": params["ash"]["percentile"] / 100},
        "dice": {"p": params["dice"]["p"] / 100},
        "vim": {"d": params["vim"]["dim"] or n_dims // 2},
        "klm": {}, "she": {}, "rmds": {},
        "gen": {"gamma": params["gen"]["gamma"], "M": params["gen"]["M"]},
        "scale": {"percentile": params["scale"]["percentile"] / 100},
        "fdbd": {}, "nnguide": {"k": params["nnguide"]["k"]},
        "gradnorm": {"temperature": params["gradnorm"]["temperature"],
                     "micro_batch_size": 1024},
    }


def pod_detector(scorer: str, settings: dict[str, Any], parts: Wrapped) -> Any:
    """pytorch-ood's detector of the shared ``scorer`` around ``parts``, with ``settings`` (its
    entry of ``pod_settings``)."""
    from pytorch_ood import detector as pod

    p, kw = parts, settings
    weight, bias = p.head.weight.detach(), p.head.bias.detach()

    def head(maps: torch.Tensor) -> torch.Tensor:  # ReAct, ASH and SCALE pass on feature maps
        return p.head(maps.flatten(1))

    make: dict[str, Callable[[], Any]] = {
        "msp": lambda: pod.MaxSoftmax(p.model, **kw),
        "energy": lambda: pod.EnergyBased(p.model, **kw),
        "maxlogit": lambda: pod.MaxLogit(p.model, **kw),
        "knn": lambda: pod.KNN(p.encoder, **kw),
        "mahalanobis": lambda: pod.Mahalanobis(p.encoder, **kw),
        "react": lambda: pod.ReAct(p.backbone, head, **kw),
        "ash": lambda: pod.ASH(p.backbone, head, **kw),
        "dice": lambda: pod.DICE(p.encoder, weight, bias, **kw),
        "vim": lambda: pod.ViM(p.encoder, w=weight, b=bias, **kw),
        "klm": lambda: pod.KLMatching(p.model, **kw),
        "she": lambda: pod.SHE(p.encoder, p.head, **kw),
        "rmds": lambda: pod.RMD(p.encoder, **kw),
        "gen": lambda: pod.GEN(p.model, **kw),
        "scale": lambda: pod.SCALE(p.backbone, head, **kw),
        "fdbd": lambda: pod.fDBD(p.encoder, p.head, **kw),
        "nnguide": lambda: pod.NNGuide(p.encoder, p.head, **kw),
        "gradnorm": lambda: pod.GradNorm(p.grad_model, param_filter=lambda n: n == p.grad_param,
                                         **kw),
    }
    return make[scorer]()


def _build_cases(n_dims: int, params: dict[str, dict[str, Any]]) -> list[Case]:
    """Every shared scorer; the pytorch-ood settings follow the oodbench parameters."""
    kw = pod_settings(n_dims, params)
    temp, k_knn, pct_react = kw["energy"]["t"], kw["knn"]["k"], kw["react"]["percentile"]
    ash_variant, pct_ash = kw["ash"]["variant"], kw["ash"]["percentile"]
    p_dice, d_vim = kw["dice"]["p"], kw["vim"]["d"]
    gamma, m_gen = kw["gen"]["gamma"], kw["gen"]["M"]
    pct_scale, k_guide = kw["scale"]["percentile"], kw["nnguide"]["k"]
    temp_grad = kw["gradnorm"]["temperature"]

    def detector(name: str, lin: nn.Linear) -> Any:
        return pod_detector(name, kw[name], feature_level(lin))

    def logits_only(name: str) -> Callable[[Features, Head, nn.Linear], PodScore]:
        def build(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
            det = detector(name, lin)
            return lambda d: det.predict_logits(d.logits)

        return build

    def knn(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
        det = detector("knn", lin)
        det.knn.set_params(n_jobs=1)  # pytorch-ood fixes n_jobs=-1; keep the CPU use modest
        det.fit_features(tr.features, tr.labels)
        return lambda d: det.predict_features(d.features)

    def mahalanobis(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
        det = detector("mahalanobis", lin).fit_features(tr.features, tr.labels)
        return lambda d: _chunked(det.predict_features, d.features)

    def react(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
        det = detector("react", lin)
        det.fit_feature_maps(tr.features, tr.labels)
        return lambda d: _chunked(det.predict_feature_maps, d.features)

    def maps(name: str) -> Callable[[Features, Head, nn.Linear], PodScore]:
        def build(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
            det = detector(name, lin)
            return lambda d: _chunked(lambda x: det.predict_feature_maps(_as_maps(x)),
                                      d.features)

        return build

    def features(name: str, chunk: int = 4096) -> Callable[[Features, Head, nn.Linear], PodScore]:
        def build(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
            det = detector(name, lin).fit_features(tr.features, tr.labels)
            return lambda d: _chunked(det.predict_features, d.features, chunk)

        return build

    def klm(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
        det = detector("klm", lin).fit_logits(tr.logits, tr.labels)
        return lambda d: _chunked(det.predict_logits, d.logits)

    def gradnorm(tr: Features, hd: Head, lin: nn.Linear) -> PodScore:
        det = detector("gradnorm", lin)
        return lambda d: det.predict(d.features)

    ash, scale = maps("ash"), maps("scale")
    dice, vim, she, rmds = features("dice", 512), features("vim"), features("she"), features("rmds")
    fdbd, nnguide = features("fdbd"), features("nnguide", 1024)

    exact = "identical formula"
    bug = "none expected (identical formula): a difference would be a bug on one side"
    pinv = ("pytorch-ood inverts the covariance summed over samples (not divided by N) plus "
            "1e-6 I; oodbench takes the pseudo-inverse of covariance / N. The scale is a "
            "constant factor; they part only for a singular covariance (dead units, D > N), "
            "where pytorch-ood weights the null directions by ~1e6 and oodbench ignores them, "
            "as sklearn's EmpiricalCovariance (pinvh) in the reference code and OpenOOD")
    well_conditioned = ("it inverts the summed covariance + 1e-6 I, oodbench "
                        "pseudo-inverts covariance / N: the same ranking while the covariance "
                        "is well conditioned")
    maps = "pooled features given as N x D x 1 x 1 maps, as oodbench (the paper: the feature map)"
    return [
        Case("msp", params["msp"], "MaxSoftmax(None, t=1).predict_logits",
             logits_only("msp"), exact, bug),
        Case("energy", params["energy"], f"EnergyBased(None, t={temp}).predict_logits",
             logits_only("energy"), exact, bug),
        Case("maxlogit", params["maxlogit"], "MaxLogit(None).predict_logits",
             logits_only("maxlogit"), exact, bug),
        Case("knn", params["knn"], f"KNN(None, k={k_knn}, normalize=True)"
             ".fit_features / predict_features", knn,
             "pytorch-ood: sklearn's exact k-th distance; oodbench: sqrt(2 - 2 s) from the k-th "
             "cosine similarity s", "only float rounding: both are the paper's normalised kNN"),
        Case("mahalanobis", params["mahalanobis"], "Mahalanobis(None).fit_features / "
             "predict_features (not MahalanobisODIN: no input perturbation, no ensemble)",
             mahalanobis, f"pytorch-ood scores 0.5 x the distance; {well_conditioned}", pinv),
        Case("react", params["react"], f"ReAct(Identity(), head, percentile={pct_react:g})"
             ".fit_feature_maps(train) / predict_feature_maps", react,
             "threshold = np.percentile of every ID-train activation in both", bug),
        Case("ash", params["ash"], f"ASH(Identity(), head, variant='{ash_variant}', "
             f"percentile={pct_ash:g}).predict_feature_maps", ash,
             f"same k = D - round(D p) and torch.topk tie-breaking; {maps}", bug),
        Case("dice", params["dice"], f"DICE(None, w, b, p={p_dice:g}).fit_features / "
             "predict_features", dice,
             "contributions in float32 (pytorch-ood) vs float64 (oodbench)",
             "a weight whose contribution rounds across the threshold differently in float32 "
             "and float64; both are the paper's rule"),
        Case("vim", params["vim"], f"ViM(None, d={d_vim}, w, b).fit_features / "
             "predict_features", vim,
             "pytorch-ood: float32, logits recomputed from the head; oodbench: float64, the "
             "cached logits", "float32 vs float64 eigenvectors; both follow the paper"),
        Case("klm", params["klm"], "KLMatching(None).fit_logits(train) / predict_logits", klm,
             "templates fitted on ID-train by predicted class in both (the paper: a validation "
             "set)", "log of an underflowed template entry: pytorch-ood uses the float32 "
             "minimum, oodbench clamps q at the smallest float64"),
        Case("she", params["she"], "SHE(None, head).fit_features / predict_features", she,
             "patterns = mean correctly classified ID-train feature per class in both", bug),
        Case("rmds", params["rmds"], "RMD(None).fit_features / predict_features", rmds,
             f"pytorch-ood: {well_conditioned}", pinv),
        Case("gen", params["gen"], f"GEN(None, gamma={gamma}, M={m_gen}).predict_logits",
             logits_only("gen"),
             "pytorch-ood averages the top-M terms, oodbench sums them (a constant factor)",
             "pytorch-ood clamps every softmax probability to [1e-7, 1 - 1e-7] before "
             "p^gamma (1 - p)^gamma: with gamma = 0.1 each near-zero tail probability's term "
             "p^0.1 is lifted to at least (1e-7)^0.1 = 0.2, which reorders the confident "
             "samples that have a tail probability below 1e-7. oodbench (float64, no "
             "clamp) follows the paper's G = sum_j p_j^gamma (1 - p_j)^gamma and the "
             "authors' code (benchmark.py, no clamp)",
             ("pytorch-ood's GEN.score without the clamp, float64", _gen_unclamped(gamma, m_gen))),
        Case("scale", params["scale"], f"SCALE(Identity(), head, percentile={pct_scale:g})"
             ".predict_feature_maps", scale, f"{exact}; {maps}", bug),
        Case("fdbd", params["fdbd"], "fDBD(None, head).fit_features / predict_features", fdbd,
             "pytorch-ood: float32; oodbench: float64, logits recomputed from the head",
             "only float rounding; both follow the paper (mean over the other classes, "
             "normalised by the distance to the ID-train mean)"),
        Case("nnguide", params["nnguide"], f"NNGuide(None, head, k={k_guide}).fit_features("
             "all ID-train) / predict_features", nnguide,
             "bank = every ID-train sample in both (oodbench alpha = 1; the paper samples a "
             "fraction)", bug),
        Case("gradnorm", params["gradnorm"], f"GradNorm(head, param_filter='weight', "
             f"temperature={temp_grad}).predict(features), per-sample autograd", gradnorm,
             "pytorch-ood: autograd of the class-mean uniform cross-entropy (1/K of "
             "oodbench's closed form over the summed KL)", bug),
    ]


@dataclass
class Comparison:
    """Rank agreement of two sets of per-set scores (both higher = more ID)."""

    spearman: float
    max_dauroc: float
    aurocs: dict[str, tuple[float, float]]  # OOD set -> (oodbench, other)

    @property
    def agree(self) -> bool:
        """Whether the two agree within the thresholds."""
        return self.spearman > AGREE_SPEARMAN and self.max_dauroc < AGREE_AUROC


@dataclass
class Result:
    """The comparison of one scorer, and of its diagnosis where it has one."""

    case: Case
    main: Comparison | None = None
    diagnosis: Comparison | None = None
    error: str = ""


def _compare_scores(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                    id_name: str) -> Comparison:
    """Spearman over ID + every OOD set, and the per-set AUROCs of both."""
    names = list(ours)
    a = np.concatenate([ours[n] for n in names])
    b = np.concatenate([theirs[n] for n in names])
    if not np.isfinite(b).all():
        raise ValueError(f"pytorch-ood gave {int((~np.isfinite(b)).sum())} non-finite scores")
    rho = float(spearmanr(a, b).statistic)
    aurocs = {n: (auroc(ours[id_name], ours[n]), auroc(theirs[id_name], theirs[n]))
              for n in names if n != id_name}
    return Comparison(rho, max(abs(x - y) for x, y in aurocs.values()), aurocs)


def _pod_scores(build: Callable[[Features, Head, nn.Linear], PodScore], train: Features,
                head: Head, sets: dict[str, Features]) -> dict[str, np.ndarray]:
    """Fit a pytorch-ood scorer and score every set, negated to higher = more ID."""
    score = build(train, head, _linear(head))
    return {name: -score(data).detach().double().cpu().numpy() for name, data in sets.items()}


def _compare(case: Case, train: Features, head: Head, sets: dict[str, Features],
             id_name: str) -> Result:
    """Score every set with both libraries (and the diagnosis) and compare the rankings."""
    ours = fit_and_score(create_scorer(case.scorer, **case.params), train, head, sets)
    result = Result(case, _compare_scores(ours, _pod_scores(case.build, train, head, sets),
                                          id_name))
    if case.diagnose is not None and result.main is not None and not result.main.agree:
        result.diagnosis = _compare_scores(
            ours, _pod_scores(case.diagnose[1], train, head, sets), id_name)
    return result


def _load(args: argparse.Namespace) -> tuple[Any, Path, Features, Head, dict[str, Features],
                                             dict[str, int]]:
    """Load the checkpoint and its ID-train, ID-test and OOD features through the cache."""
    bench = load_benchmark(args.benchmark)
    trainer = Trainer(bench, args.runs_dir, args.data_root, "cpu")
    if args.checkpoint:
        path = Path(args.checkpoint)
    else:
        found = trainer.find(args.training or bench.trainings[0].name, args.seed)
        if found is None:
            sys.exit(f"no trained checkpoint of {args.benchmark} under {args.runs_dir}; run "
                     f"`oodbench train --benchmark {args.benchmark}` or pass --checkpoint")
        path = found
    model, meta = load_checkpoint(path)
    digest = file_hash(path)
    preprocess = trainer.splits.preprocess
    if "normalisation" in meta:  # as evaluate_checkpoint: the checkpoint's own statistics
        norm = meta["normalisation"]
        preprocess = Preprocess(bench.image_size, bench.channels, tuple(norm["mean"]),
                                tuple(norm["std"]))
    ood = load_ood_sets(bench, args.data_root)
    for name, why in ood.skipped.items():
        print(f"skipped OOD set {name}: {why.splitlines()[0]}", file=sys.stderr)
    cache = FeatureCache(Path(args.runs_dir) / bench.name / "cache")

    def get(arr: ImageArray) -> Features:
        return cache.get(model, digest, arr, preprocess, torch.device("cpu"),
                         bench.extract_batch)

    train = get(trainer.splits.train)
    sets = {bench.id_dataset: get(trainer.splits.test)}
    sets |= {n: get(a) for n, a in ood.sets.items()}
    head = Head(model.fc.weight.detach().float().cpu(), model.fc.bias.detach().float().cpu())
    return bench, path, train, head, sets, {"hits": cache.hits, "misses": cache.misses}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "/").replace("\n", " ")


def _verdict(r: Result) -> str:
    """``agree`` (with what differs harmlessly) or the reason the rankings differ."""
    c = r.case
    if r.error:
        return f"**error**: {r.error}"
    assert r.main is not None
    if r.main.agree:
        return f"agree ({c.same})"
    text = f"**differ**: {c.differ}"
    if r.diagnosis is not None and c.diagnose is not None:
        d = r.diagnosis
        text += (f". Check: {c.diagnose[0]} vs oodbench gives Spearman {d.spearman:.6f}, max "
                 f"ΔAUROC {d.max_dauroc:.1e} ({'agree' if d.agree else 'still differ'})")
    return text


def _report(results: list[Result], meta: dict[str, str], sets: dict[str, Features],
            id_name: str, not_shared: list[str]) -> str:
    """The Markdown report: provenance, the summary table and the per-set AUROCs."""
    lines = ["# oodbench vs pytorch-ood: the shared scorers on the same cached features", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += [f"- sets: ID test `{id_name}` ({len(sets[id_name])}); OOD "
              + ", ".join(f"`{n}` ({len(f)})" for n, f in sets.items() if n != id_name), ""]
    lines += [
        "Both libraries score the same cached penultimate features and logits; where a "
        "pytorch-ood detector wants a model, it gets the checkpoint's head as a "
        "`torch.nn.Linear` (and `nn.Identity()` as backbone). Spearman: rank correlation of the "
        "two libraries' scores over ID test + every OOD set (pytorch-ood negated: it scores "
        "outliers high). max |ΔAUROC|: the largest AUROC difference over the OOD sets (ID "
        f"positive). Verdict \"agree\" when Spearman > {AGREE_SPEARMAN} and max |ΔAUROC| < "
        f"{AGREE_AUROC}.", "",
        "| scorer | oodbench params | pytorch-ood call | Spearman | max \\|ΔAUROC\\| | "
        "verdict / note |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.case
        params = ", ".join(f"{k}={v}" for k, v in c.params.items()
                           if "chunk" not in k) or "(none)"
        rho = dauroc = "n/a"
        if r.main is not None:
            rho, dauroc = f"{r.main.spearman:.6f}", f"{r.main.max_dauroc:.1e}"
        lines.append(f"| {c.scorer} | {_cell(params)} | `{_cell(c.call)}` | {rho} | {dauroc} | "
                     f"{_cell(_verdict(r))} |")
    ood_names = [n for n in sets if n != id_name]
    lines += ["", "AUROC per OOD set, oodbench / pytorch-ood:", "",
              "| scorer | " + " | ".join(ood_names) + " |",
              "|---|" + "---|" * len(ood_names)]
    for r in results:
        if r.main is not None:
            cells = " | ".join(f"{r.main.aurocs[n][0]:.4f} / {r.main.aurocs[n][1]:.4f}"
                               for n in ood_names)
            lines.append(f"| {r.case.scorer} | {cells} |")
    lines += ["", "Not compared: " + "; ".join(not_shared) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, run every comparison, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="fmnist")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--data-root", default=os.environ.get("OODBENCH_DATA"),
                        help="dataset root (default: $OODBENCH_DATA)")
    parser.add_argument("--checkpoint", help="a checkpoint file (default: the one of "
                        "--training / --seed found under --runs-dir)")
    parser.add_argument("--training", help="training name (default: the benchmark's first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scorers", nargs="*", help="only these oodbench scorer names")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    parser.add_argument("--out", default="results/crosscheck_pytorch_ood.md")
    args = parser.parse_args()
    try:
        import pytorch_ood  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(2)
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    bench, path, train, head, sets, cache = _load(args)
    n_dims = train.features.shape[1]
    params = {n: create_scorer(n, **bench.scorer_params.get(n, {})).get_params() for n in SHARED}
    cases = [c for c in _build_cases(n_dims, params)
             if not args.scorers or c.scorer in args.scorers]
    results = []
    for case in cases:
        print(f"{case.scorer} ...", file=sys.stderr, flush=True)
        try:
            results.append(_compare(case, train, head, sets, bench.id_dataset))
        except Exception as e:  # report the failure, keep comparing the others
            results.append(Result(case, error=f"{type(e).__name__}: {e}"))
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "pytorch-ood": importlib.metadata.version("pytorch-ood"),
        "torch": torch.__version__,
        "oodbench": importlib.metadata.version("oodbench"),
        "benchmark": bench.name,
        "checkpoint": f"`{path}` (sha256 {file_hash(path)})",
        "features": f"D = {n_dims}, K = {head.weight.shape[0]}, ID-train N = {len(train)}; "
                    f"feature cache: {cache['hits']} hits, {cache['misses']} misses",
        "command": "`" + " ".join(["python", *sys.argv]) + "`",
    }
    text = _report(results, meta, sets, bench.id_dataset, NOT_SHARED)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)
    if any(r.error for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
