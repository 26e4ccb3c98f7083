"""How `offload plot` draws runs' curves (runs/curves.py): loss, tokens/s and MFU, each against iteration and
against training time, as a grid of six panels, in the terminal (plotext) or as a PNG (matplotlib, the optional
`offload[plot]` extra). Every run has its own marker as well as its colour, so a plot without colour (a pipe, a
log) still tells the runs apart; the legend, under the panels (inside one it hides the curves), names each
run's marker, device, precision and MFU."""
from __future__ import annotations

import threading

from offload.errors import OffloadError

PANELS = (("loss", "loss", 1.0), ("tokens/s", "tokens_per_s", 1.0), ("MFU %", "mfu", 100.0))
X_AXES = (("iteration", "iters"), ("training time (s)", "train_s"))
MARKERS = ("•", "x", "+", "o", "*", "#")  # one a run, in order
PNG_HINT = "install the plot extra: pip install 'offload[plot]' (or pip install matplotlib)"
# plotext and pyplot each draw on one figure a process, and the link keeper runs every terminal's commands in one.
DRAWING = threading.Lock()


def series(curve, x_name: str, y_name: str, scale: float) -> tuple:
    """(xs, ys) of the points where the curve has a y value."""
    pairs = [(x, y * scale) for x, y in zip(getattr(curve, x_name), getattr(curve, y_name)) if y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def render_terminal(curves: list, width: int, height: int, colorless: bool) -> str:
    """The six panels at width x height terminal cells, as text (ANSI colours unless colorless)."""
    import plotext  # lazy: a plotting library costs start-up time only `offload plot` pays

    with DRAWING:
        return draw(plotext, curves, width, height, colorless)


def draw(plotext, curves: list, width: int, height: int, colorless: bool) -> str:
    plotext.terminal.limit(False, False)  # the size asked for, not the terminal's (a pipe's is taken as 80x24)
    figure = plotext.figure
    figure.clear()
    figure.subplots(len(PANELS), len(X_AXES))
    figure.plot_size(width, height - len(curves))
    for row, (title, y_name, scale) in enumerate(PANELS, 1):
        for col, (x_label, x_name) in enumerate(X_AXES, 1):
            panel = figure.subplot(row, col)
            panel.title(f"{title} / {x_label}")
            for index, curve in enumerate(curves):
                xs, ys = series(curve, x_name, y_name, scale)
                if not xs:
                    continue
                signal = panel.signal(xs, ys, marker=MARKERS[index % len(MARKERS)])
                signal.lines()
                panel.draw(signal)
    legend = [f"  {MARKERS[index % len(MARKERS)]} {curve.label}" for index, curve in enumerate(curves)]
    return "\n".join([figure.build().string(colorless=colorless).rstrip("\n"), *legend])


def write_png(curves: list, path: str) -> None:
    """The six panels as an image at path; one line saying what to install when matplotlib is missing."""
    try:
        import matplotlib  # lazy: an optional extra, and a heavy import
    except ImportError:
        raise OffloadError("--png needs matplotlib, which is not installed", hint=PNG_HINT) from None
    matplotlib.use("Agg")  # files only: no display needed, none opened
    from matplotlib import pyplot  # lazy: as above

    with DRAWING:  # pyplot's state is a process's too
        draw_png(pyplot, curves, path)


def draw_png(pyplot, curves: list, path: str) -> None:
    fig, axes = pyplot.subplots(len(PANELS), len(X_AXES), figsize=(12, 10), squeeze=False)
    try:
        for row, (title, y_name, scale) in enumerate(PANELS):
            for col, (x_label, x_name) in enumerate(X_AXES):
                ax = axes[row][col]
                for index, curve in enumerate(curves):
                    xs, ys = series(curve, x_name, y_name, scale)
                    ax.plot(xs, ys, marker=".", markersize=3, linewidth=1, label=curve.label)
                ax.set_title(title)
                ax.set_xlabel(x_label)
                ax.grid(True, alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=100)
        except OSError as exc:
            raise OffloadError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        pyplot.close(fig)
