"""Word when a followed run ends: a terminal bell, and a desktop notification where the desktop offers one
(notify-send on Linux, osascript on macOS): the exit, the wall time, the final loss and the MFU. No desktop,
no notifier, or one that fails or hangs is never an error: the summary is on the terminal anyway."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading

from offload.mfu.report import duration_text, percent
from offload.runs.record import duration_s

NOTIFIER_TIMEOUT_S = 10  # a notifier with no desktop to talk to may hang: it is stopped, not waited for


def announce_end(record, code: int) -> None:
    meta = record.meta
    how = f"killed by {meta['signal']}" if meta.get("signal") else ("finished" if code == 0 else f"exited {code}")
    title = f"offload: run {record.run_id} {how}"
    loss = meta.get("final_loss")
    body = (f"{meta.get('host', 'local')}: exit {code}, {duration_text(duration_s(meta))}, "
            f"loss {'n/a' if loss is None else f'{loss:.4f}'}, MFU {percent(meta.get('mfu'))}")
    if sys.stderr.isatty():
        sys.stderr.write("\a")
        sys.stderr.flush()
    notify(title, body)


def notifier_argv(title: str, body: str) -> list | None:
    if shutil.which("notify-send"):
        return ["notify-send", "--app-name=offload", title, body]
    if sys.platform == "darwin" and shutil.which("osascript"):
        quoted = [text.replace("\\", "\\\\").replace('"', '\\"') for text in (body, title)]
        return ["osascript", "-e", f'display notification "{quoted[0]}" with title "{quoted[1]}"']
    return None


def notify(title: str, body: str) -> None:
    argv = notifier_argv(title, body)
    if argv is None:
        return
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return
    threading.Thread(target=reap, args=(process,), name="notifier", daemon=True).start()


def reap(process) -> None:
    """Wait for the notifier (no zombie in the link keeper); kill it past NOTIFIER_TIMEOUT_S."""
    try:
        process.wait(timeout=NOTIFIER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
