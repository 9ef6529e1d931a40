"""Rich progress bars and the shared console, so every long step looks the same.

When stderr is not a terminal (``nohup``, a CI log, a pipe) rich draws nothing until a bar
finishes, so there the bars also print one plain, unwrapped line at every 10% of each task.
"""

from __future__ import annotations

from typing import Any

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


class LoggingProgress(Progress):
    """A rich ``Progress`` that, off a terminal, logs a line per tenth of each task."""

    def __init__(self, *columns: Any, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._logged: dict[TaskID, int] = {}

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


def make_progress(transient: bool = False, out: Console | None = None) -> Progress:
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
