"""``oodbench`` command line: a thin layer over the Python API.

Data (listings, tables) goes to stdout; progress, notes and logs to stderr. Every check lives in
the API: an :class:`~oodbench.errors.OodbenchError` ends in one ``error:`` paragraph naming the
file, key or option and the fix, with exit status 1 (130 on Ctrl-C, 2 for a malformed command
line); ``--debug`` raises it instead. Any other exception is a bug: its traceback is shown.
Heavy modules (torch) are imported by the sub-commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oodbench.jobs import JobGraph

# how the CLI spells each API argument that an error message names as <name>
OPTIONS = {"data_root": "--data-root", "download": "--download", "out_dir": "--out", "out": "--out",
           "runs_dir": "--runs-dir", "device": "--device", "scorers": "--scorers",
           "seeds": "--seeds", "arch": "--arch", "num_classes": "--num-classes",
           "in_channels": "--in-channels", "benchmark": "--benchmark", "plugins": "--plugin",
           "extra_ood": "--extra-ood", "config": "--config", "metric": "--metric",
           "model": "--model", "input_size": "--input-size",
           "weights": "--weights", "pretrained": "--pretrained",
           "protocol": "--protocol", "nproc": "--nproc",
           "checkpoint": "--checkpoint", "connect_timeout": "--connect-timeout",
           "address": "--address", "executor": "--executor"}


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _extra_ood(items: list[str]) -> dict[str, Path]:
    from oodbench.errors import ConfigError

    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--extra-ood expects NAME=PATH, got {item!r}",
                              "e.g. --extra-ood mine=path/to/folder_or.npz")
        if name in out:
            raise ConfigError(f"--extra-ood names {name!r} twice", "give each set its own name")
        out[name] = Path(path)
    return out


def _plugins(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", "--scorer-path", dest="plugins", action="append", default=[],
                   type=Path, metavar="FILE",
                   help="Python file registering scorers, objectives, models or datasets "
                        "(repeatable; --scorer-path is an alias)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", default="fmnist", help="benchmark name (default: fmnist)")
    p.add_argument("--config", type=Path, default=None,
                   help="benchmark file (default: ./benchmarks.toml, else oodbench's own)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder with datasets (default: $OODBENCH_DATA)")
    p.add_argument("--device", default=None,
                   help="auto, cpu, cuda or cuda:N (default: the benchmark's; auto = CUDA "
                        "when present)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="checkpoints and feature caches (default: runs/)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download datasets that no local source has")


def _scoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scorers", default=None,
                   help="comma-separated scorer names or groups (all, logits, activations, "
                        "features, model)")
    p.add_argument("--extra-ood", action="append", default=[], metavar="NAME=PATH",
                   help="extra OOD set: an image folder or .npz (repeatable)")


def _computing(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The sub-commands that train or score: train, run, ablate, eval."""
    p = sub.add_parser("train", help="train (or reuse) every checkpoint of a benchmark")
    _common(p)
    p.add_argument("--seeds", type=_positive, default=None, help="number of seeds (>= 1; "
                   "default: the benchmark's)")
    p.add_argument("--nproc", type=_positive, default=1, metavar="N",
                   help="train each checkpoint with N processes of this host (torchrun, "
                        "DistributedDataParallel; one GPU each on CUDA; default: 1)")
    p.set_defaults(func=_run)

    p = sub.add_parser("run", help="train what is missing, extract, score, write results")
    _common(p)
    _scoring(p)
    p.add_argument("--seeds", type=_positive, default=None, help="number of seeds (>= 1; "
                   "default: the benchmark's)")
    p.add_argument("--out", type=Path, default=Path("results"), help="default: results/")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where the train and eval jobs run: local (this process, default) or "
                   "ray (Ray tasks; pip install 'oodbench[ray]')")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="the Ray cluster to use (default: RAY_ADDRESS, one started on this "
                   "machine, else a new local one)")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on a Ray cluster whose address does not answer within this "
                   "long (default: 30)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the job graph (each job done or pending) and run nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: the graph as JSON")
    p.add_argument("--no-committed", dest="committed", action="store_false",
                   help="train what runs-dir lacks even where the results folder's "
                   "checkpoints/ holds it (default: reuse those, found by their key)")
    p.set_defaults(func=_run)

    p = sub.add_parser("ablate", help="train ablate variants; validation-side table")
    _common(p)
    p.add_argument("--seeds", type=_positive, default=1, help="number of seeds (default: 1)")
    p.add_argument("--out", type=Path, default=Path("results"), help="default: results/")
    p.set_defaults(func=_run)

    p = sub.add_parser("eval", help="score one model you bring (a checkpoint, or timm, "
                       "torchvision or your own code) with every scorer")
    _common(p)
    _scoring(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path, help="an oodbench checkpoint (or a plain "
                       "state_dict of one of its models, with --arch)")
    which.add_argument("--model", metavar="REF", help="timm:NAME, torchvision:NAME or "
                       "FILE.py:FACTORY")
    p.add_argument("--weights", type=Path, default=None,
                   help="with --model: a .safetensors or .pt state_dict to load")
    p.add_argument("--pretrained", action="store_true",
                   help="with --model: timm's or torchvision's default weights (downloads)")
    p.add_argument("--input-size", type=_positive, default=None,
                   help="with --model: input side in pixels (default: the model's own, else "
                        "the benchmark's)")
    p.add_argument("--arch", default=None, help="for a plain state_dict")
    p.add_argument("--num-classes", type=_positive, default=None, help="for a plain state_dict")
    p.add_argument("--in-channels", type=_positive, default=None, help="for a plain state_dict")
    p.add_argument("--out", type=Path, default=Path("results"),
                   help="writes <out>/eval-<checkpoint file stem or model name>/ (default: "
                        "results/)")
    p.set_defaults(func=_run)


def _reading(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The sub-commands that read what is there: table, plot, list."""
    p = sub.add_parser("table", help="re-render tables from results/ without recomputing")
    p.add_argument("--benchmark", default="fmnist")
    p.add_argument("--results", type=Path, default=Path("results"), help="default: results/")
    p.add_argument("--format", choices=["md", "latex", "csv", "terminal"], default="terminal")
    p.add_argument("--metric", default="fpr95", help="default: fpr95")
    p.add_argument("--json", action="store_true",
                   help="the table's cells as JSON records (mean, std, text) and its "
                        "verdicts (n, statistic, p, adjusted p, verdict) on stdout")
    p.add_argument("--protocol", default=None, metavar="openood-v1.5",
                   help="write the metrics in OpenOOD v1.5's CSV format (one file per training "
                        "and scorer, as its eval_ood.py --save-csv) and print their paths")
    p.add_argument("--out", type=Path, default=None,
                   help="with --protocol: where (default: <results>/<benchmark>/openood)")
    p.set_defaults(func=_table)

    p = sub.add_parser("plot", help="score histograms, ROC curves and Δ FPR95 from results/")
    p.add_argument("--benchmark", default="fmnist", help="benchmark name (default: fmnist)")
    p.add_argument("--results", type=Path, default=Path("results"), help="default: results/")
    p.add_argument("--seed", type=int, default=0, help="seed whose scores are plotted")
    p.add_argument("--out", type=Path, default=None, help="default: <results>/<benchmark>/plots")
    p.set_defaults(func=_plot)

    p = sub.add_parser("list", help="benchmarks, datasets, models, objectives and scorers")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="everything as one JSON object")
    p.set_defaults(func=_list)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command; each sets ``func``, its handler."""
    parser = argparse.ArgumentParser(
        prog="oodbench",
        description="Post-hoc OOD scorers x training objectives: train, score, tabulate.")
    parser.add_argument("--debug", action="store_true",
                        help="raise errors with their Python traceback instead of a message")
    sub = parser.add_subparsers(dest="command", required=True)

    _computing(sub)
    _reading(sub)
    for p in sub.choices.values():  # --debug and --plugin on every sub-command
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
        _plugins(p)
    return parser


def _print(text: str) -> None:
    """Data to stdout."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _list(args: argparse.Namespace) -> None:
    from oodbench.inventory import inventory

    info = inventory(args.config, args.data_root)
    if args.json:
        _print(json.dumps(info, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    out = Console(soft_wrap=True)  # stdout
    tables: list[tuple[str, list[str], list[list[str]]]] = [
        ("benchmarks", ["name", "ID", "model", "trainings", "OOD sets", "scorers", "data here"],
         [[b["name"], b["id"], b["model"], ", ".join(b["trainings"]), ", ".join(b["ood"]),
           ", ".join(b["scorers"]),
           "missing: " + ", ".join(b["data"]["missing"]) if b["data"]["missing"] else "all"]
          for b in info["benchmarks"]]),
        ("datasets (test split)", ["name", "available here", "source / how to get it"],
         [[d["name"], "yes" if d["available"] else "no", d["detail"]]
          for d in info["datasets"]]),
        *((f"benchmark {b['name']}: missing data", ["set", "expected (any one of)",
                                                     "how to get it"],
           [[key, "\n".join(need["expected"]), "\n".join(need["howto"])]
            for key, need in b["data"]["datasets"].items() if not need["available"]])
          for b in info["benchmarks"] if b["data"]["missing"]),
        ("models (or a reference: timm:NAME, torchvision:NAME, FILE.py:FACTORY)",
         ["name", "parameters"], [[m["name"], str(m["params"])] for m in info["models"]]),
        ("model adapters (tried in this order)", ["name", "takes", "defined in"],
         [[a["name"], a["takes"], a["defined_in"]] for a in info["adapters"]]),
        ("objectives", ["name", "label", "parameters", "diagnostics"],
         [[o["name"], o["label"], str(o["params"]), ", ".join(o["diagnostics"])]
          for o in info["objectives"]]),
        (f"scorers ({len(info['scorers'])})", ["name", "group", "consumes", "defaults",
                                               "defined in"],
         [[s["name"], s["group"], s["consumes"], str(s["defaults"]), s["defined_in"]]
          for s in info["scorers"]]),
    ]
    for title, columns, rows in tables:
        table = Table(title=title)
        for col in columns:
            table.add_column(col, overflow="fold")  # paths in full, never cut with "…"
        for row in rows:
            table.add_row(*row)
        out.print(table, markup=False)


def _table(args: argparse.Namespace) -> None:
    from oodbench.report import read_results, table_records, to_csv, to_latex, to_markdown

    if args.protocol is not None:
        from oodbench.report import export_protocol

        paths = export_protocol(args.results / args.benchmark, args.protocol, args.out)
        _print(json.dumps([str(p) for p in paths]) if args.json
               else "\n".join(str(p) for p in paths))
        return
    df, table = read_results(args.results / args.benchmark, args.metric)
    if args.json:
        _print(json.dumps(table_records(table), indent=2))
    elif args.format == "csv":
        _print(to_csv(table))
    elif args.format == "md":
        _print(to_markdown(table))
    elif args.format == "latex":
        _print(to_latex(table, caption=f"{args.benchmark}: {args.metric}",
                        label=f"tab:{args.benchmark}-{args.metric}"))
    else:
        from rich.console import Console

        from oodbench.report import print_summary, results_stats

        print_summary(df, Console(soft_wrap=True),
                      stats=results_stats(args.results / args.benchmark))


def _plot(args: argparse.Namespace) -> None:
    from oodbench.plots import plot_results

    for path in plot_results(args.results / args.benchmark, args.out, args.seed):
        _print(str(path))


def _train_args(args: argparse.Namespace) -> list[str]:
    """The ``train`` command line of ``args`` without ``--nproc``: what each process runs."""
    out = ["train", "--benchmark", args.benchmark, "--runs-dir", str(args.runs_dir)]
    for flag, value in (("--config", args.config), ("--data-root", args.data_root),
                        ("--device", args.device), ("--seeds", args.seeds)):
        if value is not None:
            out += [flag, str(value)]
    for path in args.plugins:
        out += ["--plugin", str(path)]
    return out + ["--download"] * args.download + ["--debug"] * args.debug


def _graph(graph: JobGraph, as_json: bool) -> None:
    """The job graph on stdout: a table (job, needs, resources, status, output) or JSON."""
    if as_json:
        _print(json.dumps(graph.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"job graph of {graph.benchmark}", title_justify="left")
    for column in ("job", "needs", "resources", "status", "output"):
        table.add_column(column, overflow="fold")
    for job in graph.jobs:
        spec = graph.resources.get(job.kind, {})
        needs = ", ".join(job.deps) if len(job.deps) <= 2 else f"{len(job.deps)} eval jobs"
        table.add_row(job.id, needs, ", ".join(f"{k}={v:g}" for k, v in spec.items()),
                      "[green]done[/]" if job.done else "pending", job.output or "(after its deps)")
    Console(soft_wrap=True).print(table)  # stdout
    done = sum(j.done for j in graph.jobs)
    _print(f"{done} of {len(graph.jobs)} jobs done, {len(graph.jobs) - done} pending")


def _run(args: argparse.Namespace) -> None:
    from oodbench.check import load_benchmark

    bench = load_benchmark(args.benchmark, args.config)
    options: dict[str, Any] = {"data_root": args.data_root, "device": args.device,
                               "download": args.download}
    if args.command == "train":
        if args.nproc > 1:
            from oodbench.distributed import launch
            from oodbench.train import check_world_size

            check_world_size(bench, args.nproc)  # before any process starts
            launch(args.nproc, _train_args(args))
            return
        from oodbench.train import train_benchmark

        train_benchmark(bench, seeds=args.seeds, runs_dir=args.runs_dir, **options)
        return
    if args.command == "ablate":
        from oodbench.pipeline import ablate_benchmark

        ablate_benchmark(bench, seeds=args.seeds, out_dir=args.out, runs_dir=args.runs_dir,
                         **options)
        return
    options |= {"scorers": args.scorers.split(",") if args.scorers is not None else None,
                "extra_ood": _extra_ood(args.extra_ood), "out_dir": args.out}
    if args.command == "run" and args.json and not args.dry_run:
        from oodbench.errors import ConfigError

        raise ConfigError("--json prints the job graph, so it goes with --dry-run",
                          "add --dry-run, or leave --json out (a run's data is metrics.csv)")
    if args.command == "run" and args.dry_run:
        from oodbench.matrix import plan_benchmark

        _graph(plan_benchmark(bench, seeds=args.seeds, runs_dir=args.runs_dir,
                              committed=args.committed, **options), args.json)
    elif args.command == "run":
        from oodbench.matrix import run_benchmark

        run_benchmark(bench, seeds=args.seeds, executor=args.executor, address=args.address,
                      connect_timeout=args.connect_timeout, runs_dir=args.runs_dir,
                      committed=args.committed, **options)
    elif args.model:
        from oodbench.modelref import load_model, reference_name
        from oodbench.pipeline import evaluate

        name = reference_name(args.model)
        model = load_model(args.model, args.num_classes or bench.num_classes,
                           pretrained=args.pretrained)
        evaluate(model, bench, cache_dir=args.runs_dir / bench.name / "cache", name=name,
                 input_size=args.input_size, weights=args.weights, quiet=False, **options)
    else:
        from oodbench.pipeline import evaluate_checkpoint

        evaluate_checkpoint(args.checkpoint, bench, arch=args.arch,
                            num_classes=args.num_classes, in_channels=args.in_channels,
                            runs_dir=args.runs_dir, **options)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``oodbench`` console script."""
    args = build_parser().parse_args(argv)
    from rich.markup import escape

    from oodbench.errors import OodbenchError
    from oodbench.progress import console

    def error(text: str) -> None:
        console.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False)

    def show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False)

    func: Callable[[argparse.Namespace], None] = args.func
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = show_warning
            if args.plugins:
                from oodbench.plugins import load_plugin_file

                for path in args.plugins:
                    load_plugin_file(path)
            func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        error("interrupted (Ctrl-C); finished files are kept, unfinished ones are not written")
        return 130
    except OodbenchError as e:
        if args.debug:
            raise
        error(e.render(OPTIONS))
        return 1
    except Exception as e:
        if args.debug:
            raise
        traceback.print_exc(file=sys.stderr)
        error(f"{type(e).__name__}: {e}: this is a bug in oodbench, not a problem with your "
              "input; please report it with the traceback above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
