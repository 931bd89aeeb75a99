"""Figures without a display (matplotlib's Agg canvas) and their PNG bytes, shared by the
evaluation and operations reports. No date or software chunks go into the PNG, so the same
inputs give the same bytes."""

from __future__ import annotations

import io

FIGSIZE = (6.4, 4.0)
DPI = 100


def figure(figsize: tuple[float, float] = FIGSIZE):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
