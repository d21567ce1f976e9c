"""A PNG bar chart of a comparison: TPS and TPOT per method (matplotlib, the `plot` extra)."""

from __future__ import annotations

from jaxpart.config import ConfigError


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed: pip install -e '.[plot]'"
        ) from None


def plot_comparison(comparison) -> bytes:
    """The chart as PNG bytes (written by the caller with its other outputs)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m.name for m in comparison.methods]
    colors = ["#888888", "#4c72b0", "#dd8452"][: len(names)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, attr, label, fmt in (
        (axes[0], "tps", "TPS (tokens/s, higher is better)", "{:,.0f}"),
        (axes[1], "tpot_ms", "TPOT (ms, lower is better)", "{:.3g}"),
    ):
        values = [getattr(m, attr) for m in comparison.methods]
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values])
        ax.margins(y=0.15)
        ax.set_title(label, fontsize=10)
    fig.suptitle(
        f"{comparison.model.name} ({comparison.model.dtype}, batch {comparison.batch}), "
        f"measured on {comparison.measured_on}",
        fontsize=10,
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()
