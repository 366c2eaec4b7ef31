"""Build progress for the terminal: a live line per image, or plain lines when not a TTY."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)

from layerkit.build.build import BuildEvent


class BuildProgress:
    """A live line per image (step i of n and the instruction) on a terminal, plain lines else."""

    def __init__(self, console: Console, *, enabled: bool, verbose: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.verbose = verbose
        self.live = enabled and console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.fields[image]:<8}"),
                                 BarColumn(bar_width=20), MofNCompleteColumn(),
                                 TextColumn("{task.description}"), console=console,
                                 transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BuildProgress:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def event(self, ev: BuildEvent) -> None:
        if not self.enabled:
            return
        if not self.live:
            self._plain(ev)
            return
        if ev.kind in ("start", "base") and ev.image not in self.tasks:
            self.tasks[ev.image] = self.progress.add_task(ev.text, image=ev.image, total=None)
        task = self.tasks.get(ev.image)
        if task is None:
            return
        if ev.kind == "step":
            self.progress.update(task, completed=ev.step - 1, total=ev.total,
                                 description=_short(ev.text))
        elif ev.kind == "done":
            self.progress.update(task, completed=ev.total, total=ev.total,
                                 description=f"done in {ev.text}")
        elif ev.kind == "base":
            self.progress.update(task, description=ev.text)
        elif ev.kind == "log" and self.verbose:
            self.progress.console.print(f"  {ev.image}: {ev.text}", markup=False)

    def _plain(self, ev: BuildEvent) -> None:
        if ev.kind == "step":
            self.console.print(f"{ev.image}: step {ev.step}/{ev.total}: {_short(ev.text)}",
                               markup=False)
        elif ev.kind in ("base", "start") or (ev.kind == "log" and self.verbose):
            self.console.print(f"{ev.image}: {ev.text}", markup=False)
        elif ev.kind == "done":
            self.console.print(f"{ev.image}: built in {ev.text}", markup=False)


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
