"""The two pictures of a sweep: every trial's curves on one plot, and params against the objective.

A trial that early stopping pruned is drawn dashed and ends in a large ``x`` at the step it was cut
(its legend entry says ``pruned @ step N``); a failed trial is dotted.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display in a pod

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from components.fsio import atomic_write_with  # noqa: E402
from components.leaderboard import TrialRow, fmt, saved, varying_params  # noqa: E402

# trial id -> metric -> [(step, value), ...]
Histories = Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]
BEST_COLOR = "#d62728"
SMOOTH_ABOVE = 30  # points: longer series are smoothed
SMOOTHING = 0.8
FEW_POINTS = 20  # points: shorter series get markers (evaluations every N steps)
SHORT_NAMES = {"batch_size": "bs", "learning_rate": "lr", "weight_decay": "wd", "dropout": "drop"}
CUT_MARKER = "x"  # where a pruned trial's curve ends
LINESTYLES = {"done": "-", "pruned": "--"}  # anything else (failed): dotted


def trial_label(row: TrialRow, params: Sequence[str]) -> str:
    """``#1 a1b2c3 lr=0.003 hidden=32``: rank, short id and the params that vary."""
    rank = f"#{row.rank}" if row.rank else "failed"
    shown = " ".join(f"{SHORT_NAMES.get(p, p)}={fmt(row.params.get(p))}" for p in params[:4])
    cut = f" [{row.state}]" if row.pruned else ""
    return f"{rank} {row.trial_id[:6]} {shown}".strip() + cut


def curves_png(
    path: Path,
    rows: Sequence[TrialRow],
    histories: Histories,
    *,
    sweep_id: str,
    objective: str,
    metrics: Sequence[str] = ("train_loss",),
) -> Path:
    """:func:`curves_figure` saved as a PNG at ``path``."""
    fig = curves_figure(rows, histories, sweep_id=sweep_id, objective=objective, metrics=metrics)
    return _save(fig, path)


def curves_figure(
    rows: Sequence[TrialRow],
    histories: Histories,
    *,
    sweep_id: str,
    objective: str,
    metrics: Sequence[str] = ("train_loss",),
) -> Figure:
    """One panel per metric (``train_loss`` and the objective), one line per trial, best in red.

    Pruned trials are dashed and end in an ``x`` at the cut; failed trials are dotted. The y axis
    is logarithmic when a metric spans more than 20x.
    """
    panels = [m for m in dict.fromkeys([*metrics, objective]) if _has(histories, m)]
    if not panels:
        panels = [objective]
    params = varying_params(rows)
    best = next((r for r in rows if r.rank == 1 and r.done), None)
    longest = max((len(trial_label(r, params)) for r in rows), default=0)
    side = max(3.5, 0.068 * longest + 0.7)  # inches for the legend: every label whole
    fig, axes = plt.subplots(1, len(panels), figsize=(7.0 * len(panels) + side, 5.5), squeeze=False)
    palette = _palette(len(rows))
    handles: dict[str, Any] = {}
    for ax, metric in zip(axes[0], panels, strict=True):
        for label, line in _panel(ax, metric, rows, histories, best, objective, palette, params):
            handles.setdefault(label, line)
    title = _curves_title(rows, sweep_id, objective, best)
    fig.suptitle(title)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles.keys()),
            loc="center left",
            bbox_to_anchor=(0.995 - (side - 0.2) / fig.get_figwidth(), 0.5),
            fontsize="small",
            title="rank  trial  params",
            frameon=False,
        )
    fig.tight_layout(rect=(0, 0, 1 - side / fig.get_figwidth(), 1))  # room for the suptitle too
    return fig


def _panel(
    ax: Any,
    metric: str,
    rows: Sequence[TrialRow],
    histories: Histories,
    best: TrialRow | None,
    objective: str,
    palette: Sequence[Any],
    params: Sequence[str],
) -> list[tuple[str, Any]]:
    """One metric's panel: a line per trial with a history of it; each line with its legend
    label."""
    values: list[float] = []
    smoothed_any = False
    lines: list[tuple[str, Any]] = []
    for i, row in enumerate(rows):
        series = histories.get(row.trial_id, {}).get(metric) or []
        if not series:
            continue
        is_best = best is not None and row.trial_id == best.trial_id
        color = BEST_COLOR if is_best else palette[i % len(palette)]
        line, smoothed = _trial_line(ax, row, series, color, is_best)
        values.extend(y for _, y in series)
        smoothed_any = smoothed_any or smoothed
        lines.append((trial_label(row, params), line))
    _log_if_wide(ax, values)
    ax.set_title(
        f"{metric} vs step"
        + (" (objective)" if metric == objective else "")
        + (f"\nsmoothed (EMA {SMOOTHING}); raw faint" if smoothed_any else "")
    )
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    if not values:
        ax.text(0.5, 0.5, "no metric history", ha="center", va="center", transform=ax.transAxes)
    _style_key(ax, rows)
    return lines


def _trial_line(
    ax: Any, row: TrialRow, series: Sequence[tuple[int, float]], color: Any, is_best: bool
) -> tuple[Any, bool]:
    """A trial's line (the raw one faint under its trend when it has many points, the cut marked
    when it was pruned); the line and whether it is smoothed."""
    steps, ys = zip(*sorted(series), strict=True)
    shown = list(ys)
    smoothed = len(ys) > SMOOTH_ABOVE
    if smoothed:  # minibatch losses: the raw line faint, the trend on top
        ax.plot(steps, ys, color=color, linewidth=0.6, alpha=0.18, zorder=1)
        shown = ema(ys)
    (line,) = ax.plot(
        steps,
        shown,
        color=color,
        linewidth=3.0 if is_best else 1.4,
        alpha=1.0 if is_best else 0.85,
        linestyle=LINESTYLES.get(row.status, ":"),
        marker="o" if len(ys) <= FEW_POINTS else None,
        markersize=4,
        zorder=10 if is_best else 2,
    )
    if row.pruned:  # the cut: where the study stopped it
        ax.plot(
            steps[-1:], shown[-1:], linestyle="none", marker=CUT_MARKER, markersize=11,
            markeredgewidth=2.5, color=color, zorder=11,
        )  # fmt: skip
    return line, smoothed


def _curves_title(
    rows: Sequence[TrialRow], sweep_id: str, objective: str, best: TrialRow | None
) -> str:
    done, pruned = sum(r.done for r in rows), sum(r.pruned for r in rows)
    title = f"sweep {sweep_id}: {done}/{len(rows)} trials done"
    if pruned:
        title += f", {pruned} pruned (dashed, cut at {CUT_MARKER})"
    if best is not None:
        title += f"; best {best.trial_id[:6]} {objective}={fmt(best.value)} (red, thick)"
    found = saved(rows) if pruned else None
    return title + (f"\n{found.text()}" if found is not None else "")


def _style_key(ax: Axes, rows: Sequence[TrialRow]) -> None:
    """A small key of the line styles in use when some trial did not complete."""
    key = []
    if any(r.pruned for r in rows):
        key.append(Line2D([], [], color="0.35", linestyle="--", marker=CUT_MARKER, markersize=9,
                          markeredgewidth=2, label="pruned: cut at x"))  # fmt: skip
    if any(r.failed for r in rows):
        key.append(Line2D([], [], color="0.35", linestyle=":", label="failed"))
    if key:
        key.insert(0, Line2D([], [], color="0.35", linestyle="-", label="complete"))
        ax.legend(handles=key, loc="upper right", fontsize="small", framealpha=0.85)


def params_png(
    path: Path,
    rows: Sequence[TrialRow],
    *,
    sweep_id: str,
    objective: str,
    direction: str,
) -> Path:
    """A grid of scatters: one panel per varying param, x the param, y the objective; best starred."""
    params = varying_params(rows) or sorted({k for r in rows for k in r.params})[:1]
    done = [r for r in rows if r.done and r.value is not None]
    pruned = [r for r in rows if r.pruned and r.value is not None]
    ncols = min(3, max(1, len(params)))
    nrows = math.ceil(max(1, len(params)) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.9 * nrows + 0.6), squeeze=False)
    best = next((r for r in rows if r.rank == 1 and r.done), None)
    for k, ax in enumerate(axes.flat):
        if k >= len(params):
            ax.axis("off")
            continue
        _scatter(ax, params[k], done, best, objective, pruned)
    failed = sum(r.failed or (r.value is None) for r in rows)
    better = "lower" if direction == "minimize" else "higher"
    parts = [f"sweep {sweep_id}: {objective} by param ({better} is better; best = red star)"]
    if pruned:
        parts.append(f"{len(pruned)} pruned trial(s) as grey x: the value reported at the cut")
    if failed:
        parts.append(f"{failed} failed trial(s) not shown")
    width = max(40, int(fig.get_figwidth() * 13))  # characters that fit at the default size
    title = "\n".join(textwrap.fill(p, width) for p in parts)
    lines = title.count("\n") + 1
    fig.set_figheight(fig.get_figheight() + 0.17 * (lines - 1))  # room for the title, not less plot
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()  # leaves room for the suptitle itself
    return _save(fig, path)


def _scatter(
    ax: Axes,
    param: str,
    done: Sequence[TrialRow],
    best: TrialRow | None,
    objective: str,
    pruned: Sequence[TrialRow] = (),
) -> None:
    raw = [r.params.get(param) for r in [*done, *pruned]]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    if numeric:
        xs = [float(v) for v in raw]  # type: ignore[arg-type]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
            ax.set_xscale("log")
        positions: dict[str, float] = {}
    else:
        labels = sorted({str(v) for v in raw})
        positions = {label: float(i) for i, label in enumerate(labels)}
        xs = [positions[str(v)] for v in raw]
        ax.set_xticks(list(positions.values()), list(positions.keys()))
    xs, cut_xs = xs[: len(done)], xs[len(done) :]
    ys = [float(r.value) for r in done if r.value is not None]
    cut_ys = [float(r.value) for r in pruned if r.value is not None]
    if pruned:
        ax.scatter(cut_xs, cut_ys, s=40, marker=CUT_MARKER, color="0.45", linewidths=1.5,
                   zorder=3, label="pruned (value at the cut)")  # fmt: skip
    # every trial (pruned ones too) is drawn over the best's star: one close to it stays visible
    ax.scatter(xs, ys, s=36, color="#1f77b4", alpha=0.7, edgecolors="white", linewidths=0.5,
               zorder=3)  # fmt: skip
    if best is not None and best.value is not None and best in done:
        bx = float(best.params[param]) if numeric else positions[str(best.params.get(param))]
        ax.scatter([bx], [best.value], s=260, marker="*", color=BEST_COLOR, zorder=2, label="best")
    if numeric:
        distinct = sorted(set(xs + cut_xs))
        if len(distinct) <= 8:
            ax.set_xticks(distinct, [fmt(v) for v in distinct])
            ax.minorticks_off()
    _log_if_wide(ax, ys + cut_ys)
    ax.margins(x=0.12, y=0.1)
    ax.set_xlabel(param)
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} vs {param}")
    ax.grid(True, alpha=0.3)


def ema(values: Sequence[float], weight: float | None = None) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    weight = SMOOTHING if weight is None else weight
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out


def _palette(n: int) -> list[Any]:
    """Distinct colours for the other trials, none of them red (red marks the best)."""
    name, reds = ("tab20", {6, 7}) if n > 9 else ("tab10", {3})
    cmap = plt.get_cmap(name)
    return [cmap(i) for i in range(cmap.N) if i not in reds]


def _has(histories: Histories, metric: str) -> bool:
    return any(h.get(metric) for h in histories.values())


def _log_if_wide(ax: Axes, values: Sequence[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax.set_yscale("log")


def _save(fig: Any, path: Path) -> Path:
    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return path
