"""A rich progress bar for transfers worth watching (syncs and fetches), on a terminal only."""
from __future__ import annotations

PROGRESS_FROM_BYTES = 8 << 20  # smaller transfers finish before a bar would be worth drawing


class progress_bar:
    """`with progress_bar("sync", total, out) as advance: advance(n)`; a no-op off a terminal."""

    def __init__(self, label: str, total: int, out):
        self.label, self.total, self.out, self.progress = label, total, out, None

    def __enter__(self):
        if self.total < PROGRESS_FROM_BYTES or not getattr(self.out, "isatty", lambda: False)():
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        self.progress = Progress(self.label, BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 console=Console(file=self.out), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.label, total=self.total)
        self.progress.refresh()  # drawn now, not at the first tick: a fast transfer may end before it
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
