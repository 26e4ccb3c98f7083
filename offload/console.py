"""What offload says to the person at the terminal: one-line messages, yes/no prompts, sizes, tables and
transfer progress. The lowest layer: it knows nothing of hosts or runs.

rich is imported only where a table or a bar is drawn (lazy): `offload --help` and the keeper's client stay fast.
Streams are looked up when used, never bound at import, so the link keeper can hand each command its own.
"""
from __future__ import annotations

import os
import sys

PROGRESS_FROM_BYTES = 8 << 20  # smaller transfers finish before a bar would be worth drawing


def say(message: str) -> None:
    print(f"offload: {message}", file=sys.stderr, flush=True)


def interactive() -> bool:
    """Whether a person can answer a prompt: stdin and stderr are a terminal."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def ask_yes_no(question: str, default: bool = False) -> bool:
    """`question [y/N]` (or `[Y/n]`) answered on stdin: an empty answer is the default; end of input or a
    second Ctrl-C is no."""
    try:
        answer = input(f"{question} {'[Y/n]' if default else '[y/N]'} ").strip().lower()
    except (EOFError, KeyboardInterrupt):
        return False
    return default if not answer else answer in ("y", "yes")


def human_size(num_bytes: int) -> str:
    """Decimal units with one decimal: 999 B, 12.3 kB, 1.1 MB, 4.0 GB."""
    if num_bytes < 1000:
        return f"{num_bytes} B"
    value = float(num_bytes)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if round(value, 1) < 1000 or unit == "TB":  # 999,999 B is "1.0 MB", not "1000.0 kB"
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def table_console():
    """The terminal's width on a terminal. A pipe gets $COLUMNS when it is set (as `COLUMNS=80 offload runs | less`
    asks); otherwise rich's 80 would wrap rows a script greps, so it gets as much as a row needs."""
    from rich.console import Console  # lazy: rich costs start-up time only commands that draw a table pay

    if sys.stdout.isatty():
        return Console()
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns) if columns.isdigit() and int(columns) > 0 else 400)  # rich uses only what it needs


def add_plain_row(table, *cells) -> None:
    """Cells are shown as written: a path or message with [brackets] is not rich markup."""
    from rich.text import Text  # lazy: as table_console

    table.add_row(*(Text(str(cell)) for cell in cells))


class ProgressBar:
    """`with ProgressBar("sync", total, out) as advance: advance(n)`; a no-op off a terminal."""

    def __init__(self, label: str, total: int, out=None):
        self.label, self.total, self.out, self.progress = label, total, out, None

    def __enter__(self):
        out = self.out or sys.stderr
        if self.total < PROGRESS_FROM_BYTES or not getattr(out, "isatty", lambda: False)():
            return lambda n: None
        from rich.console import Console  # lazy: only a transfer worth a bar pays for rich
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn  # lazy: as above

        self.progress = Progress(self.label, BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 console=Console(file=out), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.label, total=self.total)
        self.progress.refresh()  # drawn now, not at the first tick: a fast transfer may end before it
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
