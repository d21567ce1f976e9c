"""A crossover map as a PNG heatmap (matplotlib, the `plot` extra): the winner of each cell by
colour, its margin by shade, hatched where the model's band covers 1 (no winner)."""

from __future__ import annotations

import math

from jaxpart.perf.crossover import AXIS_WORDS, CANDIDATES, CrossoverMap

COLOURS = {"layerwise": "#4c72b0", "baseline": "#dd8452", "best TPxPP": "#55a868"}


def plot_map(m: CrossoverMap, title: str) -> bytes:
    """The map as PNG bytes (written by the caller with its other outputs)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch, Rectangle

    nx, ny = len(m.x_values), len(m.y_values)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * nx, 1.4 + 0.9 * ny))
    top = math.log(max((c.margin or 1.0) for c in m.cells) or 1.0) or 1.0
    for c in m.cells:
        i, j = m.x_values.index(c.x), m.y_values.index(c.y)
        fastest = c.fastest
        if fastest is None:
            face, text = (0.9, 0.9, 0.9), "-"
        else:
            shade = 0.35 + 0.65 * min(1.0, math.log(c.margin or 1.0) / top)
            face = tuple(1 - shade * (1 - v) for v in to_rgb(COLOURS[fastest]))
            text = f"{c.shown(fastest)}\nx{c.margin:.2f}" if c.margin else c.shown(fastest)
        ax.add_patch(
            Rectangle(
                (i, j),
                1,
                1,
                facecolor=face,
                edgecolor="white",
                hatch="//" if c.winner is None and fastest is not None else None,
            )
        )
        if c.winner is None and fastest is not None:
            text = f"no winner\n({c.shown(fastest)} x{c.margin:.2f})"
        ax.text(i + 0.5, j + 0.5, text, ha="center", va="center", fontsize=8)
    ax.set_xlim(0, nx)
    ax.set_ylim(0, ny)
    ax.set_xticks([i + 0.5 for i in range(nx)], m.x_values)
    ax.set_yticks([j + 0.5 for j in range(ny)], m.y_values)
    ax.set_xlabel(AXIS_WORDS[m.x_key])
    ax.set_ylabel(AXIS_WORDS[m.y_key])
    lo, hi = m.band
    ax.set_title(
        f"{title}\npredicted ({m.predicted_by}); no winner where the band x{lo:.2f}-x{hi:.2f} "
        "covers 1",
        fontsize=9,
    )
    handles = [Patch(facecolor=COLOURS[k], label=k) for k in CANDIDATES]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="no winner"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
