"""Top hot spots of a cProfile output as the markdown rows of ``benchmarks/profile.md``.

    python -m benchmarks.profile_table perf-floor.prof [--top 10]

Ranks functions by own time (``tottime``: where the CPU actually went, torch kernels showing
as the Python call that launched them) and gives each one's cumulative time and its share of
the profile's total.
"""

from __future__ import annotations

import argparse
import pstats
from pathlib import Path


def rows(path: Path, top: int) -> list[str]:
    """``| rank | function (file:line) | cumulative s | own s | share |`` lines."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    out = []
    for rank, ((file, line, func), (_, _, own, cum, _)) in enumerate(entries[:top], 1):
        where = f"{Path(file).name}:{line}" if line else file
        out.append(f"| {rank} | `{func}` ({where}) | {cum:.2f} | {own:.2f} | "
                   f"{100 * own / total:.1f}% |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    total = pstats.Stats(str(args.profile)).total_tt  # type: ignore[attr-defined]
    print(f"total {total:.2f} s")
    print("| rank | function (file:line) | cumulative s | own s | share of total |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows(args.profile, args.top)))


if __name__ == "__main__":
    main()
