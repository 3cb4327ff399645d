"""Figures of named experiments: suboptimality against rounds and against bits.

The only module that imports matplotlib (lazily, with the non-interactive Agg backend), so the
library works without it; install the ``plot`` extra for figures.
"""

from __future__ import annotations

import os

import numpy as np

from jaxdist.experiments._named import EXPERIMENTS, load_traces

__all__ = ["plain_log_ticks", "plot_experiment", "pyplot", "save", "style", "title"]


def plot_experiment(name: str, out_dir: str = "results") -> str:
    """Plots ``(f(x) − f*)/(f(x⁰) − f*)`` against rounds and against bits sent up per worker.

    Args:
      name: a named experiment that has been run into ``out_dir``.
      out_dir: the results folder given to :func:`jaxdist.experiments.run_experiment`.

    Returns:
      The path of the PNG figure (``<out_dir>/<name>/<name>.png``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'jaxdist[plot]'") from e
    traces = load_traces(name, out_dir)
    exp = EXPERIMENTS[name]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    top = 1.0
    for label, trace in traces.values():
        gap = np.asarray(trace.f_gap, np.float64)
        rel = gap / gap[0]
        rel = np.where(np.isfinite(rel), rel, np.nan)
        top = max(top, float(np.nanmax(rel)))
        axes[0].semilogy(trace.rounds, rel, label=label)
        axes[1].loglog(np.maximum(trace.bits_up, 1), rel, label=label)
    for ax, xlabel in zip(axes, ["communication rounds", "bits sent up per worker"], strict=True):
        ax.axhline(exp.target, color="gray", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"$(f(x)-f^\star)/(f(x^0)-f^\star)$")
        ax.grid(True, which="both", alpha=0.3)
        # float32 losses resolve (f - f*)/(f0 - f*) down to about 1e-9.
        ax.set_ylim(bottom=1e-9, top=min(top * 2, 1e6))
    axes[1].legend(fontsize=8)
    fig.suptitle(exp.claim, fontsize=9)
    fig.tight_layout()
    path = os.path.join(out_dir, name, f"{name}.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Shared style of the claims' figures (jaxdist.experiments.claims).

_STYLES = (
    {"color": "C0", "ls": "-", "marker": "o"},
    {"color": "C1", "ls": "--", "marker": "s"},
    {"color": "C2", "ls": "-.", "marker": "^"},
    {"color": "C3", "ls": ":", "marker": "D"},
    {"color": "C4", "ls": "-", "marker": "v"},
    {"color": "C5", "ls": "--", "marker": "P"},
    {"color": "C6", "ls": "-.", "marker": "X"},
    {"color": "C7", "ls": ":", "marker": "*"},
)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (a clear error without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'jaxdist[plot]'") from e
    return plt


def style(i: int, num_points: int | None = None) -> dict:
    """Line style ``i``: colour, dash pattern and marker, so curves stay distinguishable where
    they overlap and in greyscale; markers every ~10th point of a long curve."""
    s = dict(_STYLES[i % len(_STYLES)])
    if num_points is not None and num_points > 20:
        s["markevery"] = max(1, num_points // 10)
    s.setdefault("ms", 4)
    return s


def save(fig, folder: str, stem: str) -> list[str]:
    """Saves ``fig`` as ``<folder>/<stem>.png`` (for the index page) and ``.pdf`` (for papers)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = os.path.join(folder, f"{stem}.{ext}")
        fig.savefig(path, dpi=130 if ext == "png" else None, bbox_inches="tight")
        paths.append(path)
    pyplot().close(fig)
    return paths


def title(fig, claim: str, verdict=None) -> None:
    """A caption-like title: the claim and its verdict (``Verdict.summary``; the measured and
    predicted numbers are on the index page)."""
    import textwrap

    text = textwrap.fill(claim, 120)
    if verdict is not None:
        text += f"\nverdict: {verdict.summary}"
    # above the axes (and their own titles, if any): never over them
    above = 0.04 if any(ax.get_title() for ax in fig.axes) else 0.0
    fig.suptitle(text, fontsize=9, y=1.0 + above, va="bottom")


#: Relative resolution of a float32 f − f* (about 1e-7 of f(x⁰) − f*): curves stop above it.
FLOAT32_FLOOR = 1e-7


def clipped(values, floor: float = FLOAT32_FLOOR):
    """``values`` with the entries at or below ``floor`` (rounding noise) replaced by NaN."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    return np.where(values > floor, values, np.nan)


def floor_line(ax, floor: float = FLOAT32_FLOOR, *, right: bool = False) -> None:
    """Draws and labels the resolution ``floor`` below which :func:`clipped` hides values."""
    ax.axhline(floor, color="gray", lw=0.6, ls=":")
    ax.annotate(
        "float32 resolution: below is not shown (clipped)",
        (0.99 if right else 0.01, 1.35 * floor),
        xycoords=("axes fraction", "data"),
        ha="right" if right else "left",
        fontsize=7,
        color="gray",
    )


def plain_log_ticks(axis) -> None:
    """Major ticks only, as plain numbers, on a log ``axis`` (e.g. ``ax.xaxis``)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())
