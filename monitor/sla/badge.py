"""A small SVG badge in the style READMEs already show (label | value), no external assets."""

from __future__ import annotations

from xml.sax.saxutils import escape

COLORS = {"met": "#4c1", "breached": "#e05d44", "insufficient_data": "#9f9f9f"}


def _width(text: str) -> int:
    return 6 * len(text) + 12  # Verdana 11px averages ~6 px a character


def badge_svg(label: str, value: str, verdict: str) -> str:
    left, right = _width(label), _width(value)
    color = COLORS.get(verdict, COLORS["insufficient_data"])
    label, value = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + right}" height="20" '
        f'role="img" aria-label="{label}: {value}"><title>{label}: {value}</title>'
        f'<rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{color}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" '
        'font-size="11">'
        f'<text x="{left / 2}" y="14">{label}</text>'
        f'<text x="{left + right / 2}" y="14">{value}</text></g></svg>'
    )
