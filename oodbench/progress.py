"""Progress reports, rich progress bars and the shared console, so every long step looks the same.

Library code (training, extraction) reports progress through a :class:`ProgressCallback` and
never draws; :func:`make_progress` is the console's implementation, a rich bar on stderr. When
stderr is not a terminal (``nohup``, a CI log, a pipe) rich draws nothing until a bar
finishes, so there the bars also print one plain, unwrapped line at every 10% of each task.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# progress, notes and logs: stderr, never wrapped (a log line stays one line in a file)
console = Console(stderr=True, soft_wrap=True)


@contextmanager
def quiet_console(on: bool = True) -> Iterator[None]:
    """The shared console prints nothing in the block when ``on``; its earlier setting comes
    back after it (nested blocks included). The switch is the console's own, process-wide:
    every module prints through this one console, and a process that must stay silent (a
    torchrun rank other than 0, whose stderr interleaves with rank 0's) must silence all of
    them, not only the callers that could be handed a flag."""
    before = console.quiet
    console.quiet = on or before
    try:
        yield
    finally:
        console.quiet = before


class ProgressCallback(Protocol):
    """How library code reports progress: task ``desc`` has ``done`` of ``total`` units done,
    ``stats`` a free text shown beside it. A task reported again with a smaller ``done`` is a
    new one of the same name."""

    def __call__(self, desc: str, done: int, total: int, stats: str = "") -> None: ...


def no_progress(desc: str, done: int, total: int, stats: str = "") -> None:
    """The :class:`ProgressCallback` that shows nothing."""


class LoggingProgress(Progress):
    """A rich ``Progress`` that, off a terminal, logs a line per tenth of each task; called,
    it is a :class:`ProgressCallback` (one bar per task)."""

    def __init__(self, *columns: Any, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._logged: dict[TaskID, int] = {}
        self._named: dict[str, TaskID] = {}

    def __call__(self, desc: str, done: int, total: int, stats: str = "") -> None:
        """Show ``done`` of ``total`` on the bar of task ``desc`` (a new bar for a new task)."""
        task = self._named.get(desc)
        if task is None or done < self._tasks[task].completed:
            task = self._named[desc] = self.add_task(desc, total=total, stats=stats)
        self.update(task, completed=done, total=total, stats=stats)

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        if self.console.is_terminal:
            return
        task = self._tasks[task_id]
        if not task.total:
            return
        tenth = int(10 * task.completed / task.total)
        if tenth > self._logged.get(task_id, 0):
            self._logged[task_id] = tenth
            stats = task.fields.get("stats", "")
            self.console.print(f"{task.description}: {task.completed:.0f}/{task.total:.0f} "
                               f"({10 * tenth}%) {task.elapsed or 0:.0f} s {stats}".rstrip(),
                               soft_wrap=True, markup=False, highlight=False)


def make_progress(transient: bool = False, out: Console | None = None) -> LoggingProgress:
    """A progress bar with a free-text ``stats`` field (loss, accuracy, ...), drawn on ``out``
    (default: the shared stderr console)."""
    return LoggingProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
        console=out or console,
        transient=transient,
    )
