"""Templates (Jinja2, every value escaped unless a template says otherwise, and none does) and the
static assets, both shipped in the package (monitor/status/templates, monitor/status/static)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

PPM = 1_000_000
NONE = "\u2013"  # an en dash: no figure

VERDICTS = {"met": "met", "breached": "breached", "insufficient_data": "not enough data"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    version: str  # a hash of the body: URLs change when it does, so browsers may cache long


_MEDIA_TYPES = {
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
}


def _load_assets() -> dict[str, Asset]:
    assets = {}
    for entry in (resources.files("monitor.status") / "static").iterdir():
        kind = entry.name.rpartition(".")[2]
        if entry.is_file() and kind in _MEDIA_TYPES:
            body = entry.read_bytes()
            assets[entry.name] = Asset(
                body, _MEDIA_TYPES[kind], hashlib.sha256(body).hexdigest()[:12]
            )
    return assets


ASSETS = _load_assets()


def percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percentage (0.5821 -> 58.2%)."""
    return NONE if fraction is None else f"{fraction * 100:.{digits}f}%"


def ppm_percent(value: int | None) -> str:
    """Parts per million as a percentage rounded down, so 99.999 % never shows as 100 %."""
    if value is None:
        return "no data"
    return f"{value // 10 / 1000:.3f}".rstrip("0").rstrip(".") + "%"


def number(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return NONE
    return f"{value:.{digits}f}{unit}"


def utc(value: datetime | None) -> str:
    return NONE if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_minute(value: datetime | None) -> str:
    return NONE if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def verdict(value: str) -> str:
    return VERDICTS.get(value, value)


def static_url(name: str) -> str:
    return f"/status/static/{name}?v={ASSETS[name].version}"


_env = Environment(
    loader=PackageLoader("monitor.status", "templates"),
    autoescape=True,  # every template, whatever its name: names and reasons come from outside
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(
    percent=percent,
    ppm_percent=ppm_percent,
    number=number,
    utc=utc,
    utc_minute=utc_minute,
    verdict=verdict,
)
_env.globals.update(static_url=static_url, PPM=PPM)


def render(template: str, *, root: str = "", **context: Any) -> str:
    """``root``: the app's root path (behind a proxy under a prefix), before every link."""
    return _env.get_template(template).render(root=root, **context)
