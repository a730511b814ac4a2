"""Small inline-SVG charts for the HTML report: no JavaScript library, no network, one file."""
from __future__ import annotations

from html import escape

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"]


def _label(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis, the whole of it shown on hover; escaped after
    the cut, so that no entity is cut in half."""
    if len(text) <= limit:
        return escape(text)
    return f"{escape(text[:limit - 1])}\u2026<title>{escape(text)}</title>"


def bars(title: str, labels: list[str], values: list[float], *, width: int = 640, fmt: str = "{:,.0f}") -> str:
    """Horizontal bars, one per label."""
    if not labels:
        return _empty(title)
    row, left, top = 22, 250, 28
    height = top + row * len(labels) + 10
    peak = max(max(values), 1e-9)
    parts = [_open(title, width, height)]
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * row
        w = max(1.0, (width - left - 70) * value / peak) if value else 0
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{_label(str(label), 38)}</text>'
                     f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{PALETTE[0]}"/>'
                     f'<text x="{left + w + 4:.1f}" y="{y + 14}">{fmt.format(value)}</text>')
    return "".join(parts) + "</svg>"


def histograms(title: str, series: dict[str, list[float]], *, lo: float, hi: float, bins: int = 20,
               width: int = 640, height: int = 220) -> str:
    """Overlaid histograms (bar outlines per series) over [lo, hi]."""
    if not any(series.values()):
        return _empty(title)
    left, top, bottom = 40, 28, 30
    step = (hi - lo) / bins
    counts = {name: [0] * bins for name in series}
    for name, values in series.items():
        for v in values:
            counts[name][min(bins - 1, max(0, int((v - lo) / step)))] += 1
    peak = max(max(c) for c in counts.values()) or 1
    plot_w, plot_h = width - left - 130, height - top - bottom
    parts = [_open(title, width, height)]
    for k, (name, c) in enumerate(counts.items()):
        color = PALETTE[k % len(PALETTE)]
        bw = plot_w / bins / max(1, len(counts))
        for b, n in enumerate(c):
            h = plot_h * n / peak
            x = left + b * plot_w / bins + k * bw
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                         f'fill="{color}"><title>{escape(name)}: {n}</title></rect>')
        parts.append(f'<rect x="{width - 120}" y="{top + 16 * k}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{width - 106}" y="{top + 16 * k + 9}">{_label(name, 16)}</text>')
    for t in range(5):
        v = lo + (hi - lo) * t / 4
        x = left + plot_w * t / 4
        parts.append(f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle">{v:g}</text>')
    return "".join(parts) + "</svg>"


def heatmap(title: str, labels: list[str], matrix: list[list[float | None]], *, fmt: str = "{:.2f}") -> str:
    """A labelled square matrix; empty cells where there is no data."""
    if not labels:
        return _empty(title)
    slant = 5 * min(20, max(map(len, labels)))  # how far the longest slanted column label reaches, up and right
    cell, left, top = 56, 140, 36 + slant
    size = left + cell * len(labels) + slant
    parts = [_open(title, size, top + cell * len(labels) + 20)]
    for j, name in enumerate(labels):  # slanted, so that names as long as the rows' fit above their column
        x, y = left + j * cell + cell / 2, top - 8
        parts.append(f'<text x="{x}" y="{y}" transform="rotate(-40 {x} {y})">{_label(name, 20)}</text>')
    for i, name in enumerate(labels):
        parts.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">{_label(name, 20)}</text>')
        for j, v in enumerate(matrix[i]):
            shade = "#eee" if v is None else f"rgba(76,120,168,{0.15 + 0.85 * max(0.0, min(1.0, v)):.2f})"
            parts.append(f'<rect class="cell" x="{left + j * cell}" y="{top + i * cell}" width="{cell - 2}" '
                         f'height="{cell - 2}" fill="{shade}"/>')
            if v is not None:
                parts.append(f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" '
                             f'text-anchor="middle">{fmt.format(v)}</text>')
    return "".join(parts) + "</svg>"


def scatter(title: str, groups: dict[str, list[tuple[float, float]]], *, width: int = 640, height: int = 420) -> str:
    points = [p for g in groups.values() for p in g]
    if not points:
        return _empty(title)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 150) / ((x1 - x0) or 1)
    sy = (height - 60) / ((y1 - y0) or 1)
    parts = [_open(title, width, height)]
    for k, (name, pts) in enumerate(groups.items()):
        color = PALETTE[k % len(PALETTE)]
        for x, y in pts:
            parts.append(f'<circle class="dot" cx="{20 + (x - x0) * sx:.1f}" cy="{40 + (y1 - y) * sy:.1f}" r="2.5" '
                         f'fill="{color}" fill-opacity="0.6"/>')
        parts.append(f'<circle cx="{width - 115}" cy="{40 + 16 * k}" r="5" fill="{color}"/>'
                     f'<text x="{width - 105}" y="{44 + 16 * k}">{escape(name)} ({len(pts)})</text>')
    return "".join(parts) + "</svg>"


def _open(title: str, width: int, height: int) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><text class="title" x="4" y="16">{escape(title)}</text>')


def _empty(title: str) -> str:
    return _open(title, 640, 40) + '<text x="4" y="34">(no data yet)</text></svg>'
