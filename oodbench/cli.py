"""``oodbench`` command line: a thin layer over the Python API.

Bad input ends in one ``error:`` paragraph naming the file, key or option and the fix, with
exit status 1 (130 on Ctrl-C); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from rich.markup import escape
from rich.table import Table

from oodbench.config import Benchmark, ConfigError, load_benchmark, load_config
from oodbench.progress import console

# errors whose message is written for the user; anything else also gets its type and a hint
EXPECTED = (ConfigError, RuntimeError, ValueError, KeyError, OSError)


def _extra_ood(items: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--extra-ood expects NAME=PATH, got {item!r}; e.g. "
                             "--extra-ood mine=path/to/folder_or.npz")
        out[name] = Path(path)
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", default="fmnist", help="benchmark name (default: fmnist)")
    p.add_argument("--config", type=Path, default=None,
                   help="benchmark file (default: ./benchmarks.toml, else the repository's)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder with datasets (default: $OODBENCH_DATA)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="default: the benchmark's setting (auto = CUDA when present)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="checkpoints and feature caches (default: runs/)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download datasets that no local source has")


def _scorer_path(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scorer-path", action="append", default=[], type=Path, metavar="FILE",
                   help="Python file of @register_scorer classes to load (repeatable)")


def _scoring(p: argparse.ArgumentParser) -> None:
    _scorer_path(p)
    p.add_argument("--scorers", default=None, help="comma-separated scorer names")
    p.add_argument("--extra-ood", action="append", default=[], metavar="NAME=PATH",
                   help="extra OOD set: an image folder or .npz (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="oodbench",
        description="Post-hoc OOD scorers x training objectives: train, score, tabulate.")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of a short message")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or reuse) every checkpoint of a benchmark")
    _common(p)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: config)")

    p = sub.add_parser("run", help="train what is missing, extract, score, write results")
    _common(p)
    _scoring(p)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: config)")
    p.add_argument("--out", type=Path, default=Path("results"), help="default: results/")

    p = sub.add_parser("ablate", help="train ablate variants; validation-side table")
    _common(p)
    _scorer_path(p)
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (default: 1)")
    p.add_argument("--out", type=Path, default=Path("results"), help="default: results/")

    p = sub.add_parser("eval", help="score one checkpoint you bring with every scorer")
    _common(p)
    _scoring(p)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--arch", default=None, help="for a plain state_dict")
    p.add_argument("--num-classes", type=int, default=None, help="for a plain state_dict")
    p.add_argument("--in-channels", type=int, default=None, help="for a plain state_dict")
    p.add_argument("--out", type=Path, default=None, help="default: results/eval-<checkpoint>")

    p = sub.add_parser("table", help="re-render tables from results/ without recomputing")
    p.add_argument("--benchmark", default="fmnist")
    p.add_argument("--results", type=Path, default=Path("results"), help="default: results/")
    p.add_argument("--format", choices=["md", "latex", "csv", "terminal"], default="terminal")
    p.add_argument("--metric", default="fpr95", help="default: fpr95")

    p = sub.add_parser("plot", help="score histograms, ROC curves and Δ FPR95 from results/")
    p.add_argument("--benchmark", default="fmnist", help="benchmark name (default: fmnist)")
    p.add_argument("--results", type=Path, default=Path("results"), help="default: results/")
    p.add_argument("--seed", type=int, default=0, help="seed whose scores are plotted")
    p.add_argument("--out", type=Path, default=None, help="default: <results>/<benchmark>/plots")

    p = sub.add_parser("list", help="benchmarks, datasets, models, objectives and scorers")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--data-root", type=Path, default=None)
    _scorer_path(p)
    for p in sub.choices.values():  # --debug also after the sub-command
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    return parser


def _list(args: argparse.Namespace) -> None:
    from oodbench.data import dataset_names, dataset_status
    from oodbench.models import list_models
    from oodbench.objectives import list_objectives, objective_params
    from oodbench.scoring import (
        ModelScorer,
        create_scorer,
        get_scorer,
        list_scorers,
        load_builtin_scorers,
    )

    load_builtin_scorers()
    t = Table(title="benchmarks")
    for col in ("name", "ID", "model", "trainings", "OOD sets"):
        t.add_column(col)
    for b in load_config(args.config).values():
        t.add_row(b.name, b.id_dataset, b.model, ", ".join(x.name for x in b.trainings),
                  ", ".join(o.name for o in b.ood))
    console.print(t)
    t = Table(title="datasets (test split)")
    for col in ("name", "available here", "source / how to get it"):
        t.add_column(col)
    for name in dataset_names():
        ok, why = dataset_status(name, "test", args.data_root)
        ways = [line.strip().split(". ", 1)[1] for line in why.splitlines()[1:]
                if line.strip()[:1].isdigit()]
        t.add_row(name, "[green]yes[/]" if ok else "[red]no[/]",
                  why if ok else "sources tried: " + "; ".join(ways))
    console.print(t)
    console.print("models: " + ", ".join(list_models()))
    for name in list_objectives():
        console.print(f"objective {name}: {objective_params(name)}")
    t = Table(title=f"scorers ({len(list_scorers())})")
    for col in ("name", "consumes", "defaults", "defined in"):
        t.add_column(col)
    for name in list_scorers():
        cls = get_scorer(name)
        t.add_row(name, "model" if issubclass(cls, ModelScorer) else "features",
                  str(create_scorer(name).get_params()), sys.modules[cls.__module__].__file__
                  if not cls.__module__.startswith("scorers.") else cls.__module__)
    console.print(t)


def _table(args: argparse.Namespace) -> None:
    from oodbench.report import compat_table, print_summary, to_latex, to_markdown

    path = args.results / args.benchmark / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `oodbench run --benchmark {args.benchmark}`")
    df = pd.read_csv(path, keep_default_na=True)
    if args.format == "csv":
        compat_table(df, args.metric).to_csv(sys.stdout)
    elif args.format == "md":
        print(to_markdown(compat_table(df, args.metric)))
    elif args.format == "latex":
        print(to_latex(compat_table(df, args.metric), caption=f"{args.benchmark}: {args.metric}",
                       label=f"tab:{args.benchmark}-{args.metric}"))
    else:
        print_summary(df)


def _plot(args: argparse.Namespace) -> None:
    from oodbench.plots import plot_results

    folder = args.results / args.benchmark
    if not (folder / "metrics.csv").is_file():
        raise SystemExit(f"{folder}/metrics.csv not found: run `oodbench run --benchmark "
                         f"{args.benchmark}`")
    for path in plot_results(folder, args.out, args.seed):
        console.print(str(path))


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True)


def _error(text: str) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(text)}", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``oodbench`` console script."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _show_warning
            _dispatch(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        _error("interrupted (Ctrl-C); finished files are kept, unfinished ones are not written")
        return 130
    except EXPECTED as e:
        if args.debug:
            raise
        _error(str(e.args[0]) if type(e) is KeyError and e.args else str(e))  # unquoted
        return 1
    except Exception as e:
        if args.debug:
            raise
        _error(f"{type(e).__name__}: {e} (unexpected; rerun with --debug for the traceback, "
               "and please report it)")
        return 1
    return 0


def _dispatch(args: argparse.Namespace) -> None:
    if getattr(args, "scorer_path", None):
        from oodbench.scoring import load_scorer_file

        for path in args.scorer_path:
            load_scorer_file(path)
    if args.command == "list":
        _list(args)
    elif args.command == "table":
        _table(args)
    elif args.command == "plot":
        _plot(args)
    else:
        _run(args)


def _check_writable(folder: Path, option: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written to."""
    probe = folder.absolute()
    while not probe.exists():  # the nearest existing ancestor decides
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return
    why = "is not writable" if probe.is_dir() else "is a file, not a folder"
    raise ValueError(f"{option} {folder}: cannot write there because {probe} {why}; pass "
                     f"{option} a folder you can write to")


def _check_scorers(bench: Benchmark, names: list[str], where: str) -> None:
    """Refuse, before any training, an unknown scorer or scorer parameters it rejects."""
    from oodbench.scoring import create_scorer, get_scorer

    for name in names:
        try:
            get_scorer(name)
        except KeyError as e:
            raise ConfigError(f"{where}: {e}") from e
        params = bench.scorer_params.get(name, {})
        try:
            create_scorer(name, **params)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{bench.source}: [benchmarks.{bench.name}.scorer_params] "
                              f"{name} = {params}: {e}; fix that value in the file") from e


def _run(args: argparse.Namespace) -> None:
    from oodbench.pipeline import ablate_benchmark, evaluate_checkpoint, run_benchmark
    from oodbench.train import train_benchmark

    bench = load_benchmark(args.benchmark, args.config)
    data_root = args.data_root or os.environ.get("OODBENCH_DATA")
    _check_writable(args.runs_dir, "--runs-dir")
    if args.command == "train":
        train_benchmark(bench, args.seeds, args.runs_dir, data_root, args.device, args.download)
        return
    where = f"{bench.source}: [benchmarks.{bench.name}]"
    if args.command == "ablate":
        _check_writable(args.out, "--out")
        _check_scorers(bench, list(bench.ablate_scorers or bench.scorers), f"{where} scorers")
        ablate_benchmark(bench, args.seeds, args.out, args.runs_dir, data_root, args.device,
                         download=args.download)
        return
    scorers = args.scorers.split(",") if args.scorers else None
    _check_scorers(bench, scorers or list(bench.scorers),
                   "--scorers" if scorers else f"{where} scorers")
    extra = _extra_ood(args.extra_ood)
    if args.command == "run":
        _check_writable(args.out, "--out")
        run_benchmark(bench, args.seeds, args.out, args.runs_dir, data_root, args.device,
                      scorers, extra, download=args.download)
    else:
        out = args.out or Path("results") / f"eval-{args.checkpoint.stem}"
        _check_writable(out, "--out")
        evaluate_checkpoint(args.checkpoint, bench, out, args.runs_dir, data_root, args.device,
                            args.arch, args.num_classes, args.in_channels, scorers, extra,
                            download=args.download)


if __name__ == "__main__":
    sys.exit(main())
