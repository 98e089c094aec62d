"""Figures without global state: a matplotlib ``Figure`` (Agg canvas, no pyplot) written atomically as PNG.

Shared by ``python -m condense show --curve`` and every ``experiments.*`` figure
(:mod:`experiments.figures`): one look (size, dpi, grid), axis labels with units, legends, and
PNGs that are either complete or absent (:func:`condense.utils.atomic_write_bytes`).
"""
from __future__ import annotations

import io
import math
import os
import textwrap
from pathlib import Path
from typing import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .utils import UserError, atomic_write_bytes

__all__ = ["new_figure", "save_png", "mean_std", "errorbar_series", "reference_line", "wrapped_suptitle", "loss_curve"]

DPI = 110


def new_figure(panels: int = 1, *, cols: int | None = None, panel_size: tuple[float, float] = (4.6, 3.4)) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` axes laid out on a grid of ``cols`` columns (default: up to 3)."""
    if panels < 1:
        raise UserError("a figure needs at least one panel")
    cols = max(1, min(cols or 3, panels))
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    for ax in axes:
        ax.grid(True, alpha=0.3, linewidth=0.6)
    return fig, axes


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Render ``fig`` to PNG in memory and write it atomically to ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write_bytes(buf.getvalue(), path)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (the convention of every results table); std 0 for one value."""
    vals = [float(v) for v in values]
    if not vals:
        raise UserError("no values to summarise")
    m = sum(vals) / len(vals)
    return m, (sum((v - m) ** 2 for v in vals) / len(vals)) ** 0.5


def errorbar_series(ax: Axes, x: Sequence[float], mean: Sequence[float], std: Sequence[float] | None, label: str, **style) -> None:
    """One line with markers and vertical error bars (``std`` may be ``None``)."""
    style = {"marker": "o", "capsize": 3, "linewidth": 1.4, "markersize": 5, **style}
    ax.errorbar(list(x), list(mean), yerr=None if std is None else list(std), label=label, **style)


def reference_line(ax: Axes, value: float, label: str, *, std: float | None = None, vertical: bool = False, **style) -> None:
    """A horizontal (or vertical) reference level with an optional ±std band."""
    style = {"linestyle": "--", "linewidth": 1.2, "color": "0.35", **style}
    line = (ax.axvline if vertical else ax.axhline)(value, label=label, **style)
    if std:
        span = ax.axvspan if vertical else ax.axhspan
        span(value - std, value + std, color=line.get_color(), alpha=0.12, linewidth=0)


def wrapped_suptitle(fig: Figure, title: str) -> None:
    """A 9 pt suptitle wrapped to the figure's width (~14 characters per inch), each line of ``title`` on its own."""
    chars = int(fig.get_figwidth() * 14)
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in title.split("\n")), fontsize=9)


def loss_curve(history: Sequence[float], path: str | os.PathLike, *, title: str, ylabel: str = "distillation loss") -> Path:
    """Loss per outer iteration (log y when the loss is positive and spans more than a decade)."""
    if not history:
        raise UserError("empty loss history")
    fig, (ax,) = new_figure(1, panel_size=(6.0, 3.6))
    its = range(1, len(history) + 1)
    ax.plot(its, list(history), linewidth=0.8, color="C0", alpha=0.45 if len(history) > 50 else 1.0, label="per iteration")
    window = max(1, len(history) // 50)
    if window > 1:
        smooth = [sum(history[max(0, i - window + 1) : i + 1]) / len(history[max(0, i - window + 1) : i + 1]) for i in range(len(history))]
        ax.plot(its, smooth, linewidth=1.6, color="C1", label=f"running mean ({window} iterations)")
    if min(history) > 0 and max(history) / min(history) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("outer iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)
