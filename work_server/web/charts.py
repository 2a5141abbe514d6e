"""Server-rendered SVG charts: accuracy/loss per round and the confusion-matrix heat map.

Hand-written SVG, no JavaScript and no third-party code. Every chart is an ``img`` with a
``<title>`` and a ``<desc>`` that states the data in words (screen readers), and the pages
show the same numbers in a table. Colours are presentation attributes (the pages' Content
Security Policy forbids inline ``style``). Every string that comes from data is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

ACCURACY_COLOUR = "#1f77b4"
LOSS_COLOUR = "#d95f02"


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def accuracy_loss_chart(
    rounds: Sequence[int],
    accuracy: Sequence[float],
    loss: Sequence[float],
    *,
    total_rounds: int | None = None,
    chart_id: str = "accuracy-chart",
    width: int = 560,
    height: int = 260,
) -> Markup:
    """Accuracy (left axis, 0..1) and loss (right axis, 0..max) per round, as inline SVG."""
    left, right, top, bottom = 48, 52, 16, 40
    pw, ph = width - left - right, height - top - bottom
    n_max = max([total_rounds or 0, *rounds, 1])
    loss_max = max([*loss, 1e-9]) * 1.1

    def x(r: float) -> float:
        return left + (pw * (r - 1) / (n_max - 1) if n_max > 1 else pw / 2)

    def y_acc(a: float) -> float:
        return top + ph * (1 - min(max(a, 0.0), 1.0))

    def y_loss(v: float) -> float:
        return top + ph * (1 - min(max(v / loss_max, 0.0), 1.0))

    if rounds:
        last = len(rounds) - 1
        desc = (
            f"{len(rounds)} round(s). Round {rounds[last]}: accuracy {accuracy[last]:.4f}, "
            f"loss {loss[last]:.4f}. "
            + "; ".join(
                f"round {r}: accuracy {a:.4f}, loss {v:.4f}"
                for r, a, v in zip(rounds, accuracy, loss, strict=True)
            )
        )
    else:
        desc = "No round has been evaluated yet."
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}" class="chart" '
        f'viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        f'data-points="{len(rounds)}">',
        f'<title id="{escape(chart_id)}-title">Accuracy and loss per round</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#c8c8c8"/>',
    ]
    # grid and axes
    for i in range(6):
        frac = i / 5
        yy = top + ph * (1 - frac)
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{_fmt(yy)}" y2="{_fmt(yy)}" stroke="#eeeeee"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{_fmt(yy + 4)}" text-anchor="end" font-size="11" '
            f'fill="{ACCURACY_COLOUR}">{frac:.1f}</text>'
        )
        parts.append(
            f'<text x="{left + pw + 6}" y="{_fmt(yy + 4)}" font-size="11" '
            f'fill="{LOSS_COLOUR}">{loss_max * frac:.2f}</text>'
        )
    step = max(1, n_max // 10)
    for r in range(1, n_max + 1, step):
        parts.append(
            f'<text x="{_fmt(x(r))}" y="{top + ph + 16}" text-anchor="middle" '
            f'font-size="11" fill="#333333">{r}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" font-size="12" '
        'fill="#333333">round</text>'
    )
    for values, ymap, colour, name in (
        (accuracy, y_acc, ACCURACY_COLOUR, "accuracy"),
        (loss, y_loss, LOSS_COLOUR, "loss"),
    ):
        pts = [(x(r), ymap(v)) for r, v in zip(rounds, values, strict=True)]
        if len(pts) > 1:
            path = " ".join(f"{_fmt(px)},{_fmt(py)}" for px, py in pts)
            dash = ' stroke-dasharray="6 3"' if name == "loss" else ""
            parts.append(
                f'<polyline class="series-{name}" points="{path}" fill="none" '
                f'stroke="{colour}" stroke-width="2"{dash}/>'
            )
        for (px, py), r, v in zip(pts, rounds, values, strict=True):
            parts.append(
                f'<circle class="point-{name}" cx="{_fmt(px)}" cy="{_fmt(py)}" r="3.5" '
                f'fill="{colour}"><title>round {r}: {name} {v:.4f}</title></circle>'
            )
    # legend
    lx = left + 8
    parts.append(
        f'<line x1="{lx}" x2="{lx + 18}" y1="{top + 12}" y2="{top + 12}" '
        f'stroke="{ACCURACY_COLOUR}" stroke-width="2"/>'
        f'<text x="{lx + 22}" y="{top + 16}" font-size="12" fill="#333333">accuracy</text>'
        f'<line x1="{lx + 90}" x2="{lx + 108}" y1="{top + 12}" y2="{top + 12}" '
        f'stroke="{LOSS_COLOUR}" stroke-width="2" stroke-dasharray="6 3"/>'
        f'<text x="{lx + 112}" y="{top + 16}" font-size="12" fill="#333333">loss</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every data string above is escaped)


def _cell_colour(frac: float) -> str:
    """White (0) to dark blue (1)."""
    frac = min(max(frac, 0.0), 1.0)
    r = round(255 - frac * (255 - 8))
    g = round(255 - frac * (255 - 48))
    b = round(255 - frac * (255 - 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def confusion_heatmap(
    matrix: Sequence[Sequence[int]],
    *,
    labels: Sequence[str] | None = None,
    chart_id: str = "confusion-heatmap",
    cell: int = 34,
) -> Markup:
    """The confusion matrix (rows = true class, columns = predicted) as an SVG heat map.

    Each cell's colour is its share of its row (recall per class on the diagonal)."""
    n = len(matrix)
    labels = list(labels) if labels is not None else [str(i) for i in range(n)]
    left, top = 56, 40
    width = left + n * cell + 12
    height = top + n * cell + 12
    total = sum(sum(row) for row in matrix)
    correct = sum(matrix[i][i] for i in range(n))
    desc = f"{n} classes, {total} test samples, {correct} on the diagonal (correct). " + "; ".join(
        f"true {labels[i]}: {matrix[i][i]} of {sum(matrix[i])} predicted correctly"
        for i in range(n)
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}" class="heatmap" '
        f'viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc">',
        f'<title id="{escape(chart_id)}-title">Confusion matrix (rows: true class, '
        "columns: predicted class)</title>",
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
        f'<text x="{left + n * cell / 2}" y="12" text-anchor="middle" font-size="12" '
        'fill="#333333">predicted</text>',
        f'<text x="12" y="{top + n * cell / 2}" text-anchor="middle" font-size="12" '
        f'fill="#333333" transform="rotate(-90 12 {top + n * cell / 2})">true</text>',
    ]
    for j in range(n):
        parts.append(
            f'<text x="{left + j * cell + cell / 2}" y="{top - 8}" text-anchor="middle" '
            f'font-size="11" fill="#333333">{escape(labels[j])}</text>'
        )
    for i, row in enumerate(matrix):
        row_total = sum(row) or 1
        parts.append(
            f'<text x="{left - 8}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end" '
            f'font-size="11" fill="#333333">{escape(labels[i])}</text>'
        )
        for j, value in enumerate(row):
            frac = value / row_total
            text_colour = "#ffffff" if frac > 0.5 else "#222222"
            parts.append(
                f'<rect class="cell" x="{left + j * cell}" y="{top + i * cell}" '
                f'width="{cell}" height="{cell}" fill="{_cell_colour(frac)}" '
                f'stroke="#ffffff"><title>true {escape(labels[i])}, predicted '
                f"{escape(labels[j])}: {value}</title></rect>"
            )
            if value:
                parts.append(
                    f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" '
                    f'text-anchor="middle" font-size="10" fill="{text_colour}">{value}</text>'
                )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every data string above is escaped)
