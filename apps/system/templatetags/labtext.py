"""Small filters every page can load (`{% load labtext %}`): numbers with separators, durations, visible whitespace."""

from django import template
from django.utils.translation import gettext as _

register = template.Library()


def visible_whitespace(text: str) -> str:
    """Spaces, tabs and newlines made visible (the newline itself kept, so lines still break)."""
    return text.replace(" ", "·").replace("\t", "→").replace("\r", "␍").replace("\n", "↵\n")


@register.filter
def commas(value):
    """1234567 -> '1,234,567'; None -> '—'."""
    if value is None or value == "":
        return "—"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value


@register.filter
def fixed(value, digits=2):
    """A float with a fixed number of decimals; None -> '—'."""
    if value is None:
        return "—"
    try:
        return f"{float(value):,.{int(digits)}f}"
    except (TypeError, ValueError):
        return value


@register.filter
def duration(seconds):
    """Seconds as '42 s', '3 min 05 s', '2 h 07 min'; None -> '—'."""
    if seconds is None:
        return "—"
    s = max(0, int(round(float(seconds))))
    if s < 60:
        return _("%(s)s s") % {"s": f"{float(seconds):.1f}" if float(seconds) < 10 else s}
    if s < 3600:
        return _("%(m)s min %(s)s s") % {"m": s // 60, "s": f"{s % 60:02d}"}
    return _("%(h)s h %(m)s min") % {"h": s // 3600, "m": f"{s % 3600 // 60:02d}"}


@register.filter
def rate_chars(value):
    """Characters per second as 'K chars/s' or 'M chars/s'."""
    if not value:
        return "—"
    value = float(value)
    if value >= 1e6:
        return _("%(n)s M chars/s") % {"n": f"{value / 1e6:.1f}"}
    return _("%(n)s K chars/s") % {"n": f"{value / 1e3:.0f}"}


@register.filter
def visible(text):
    """Whitespace made visible (· for space, ↵ for newline, → for tab)."""
    if text is None:
        return ""
    return visible_whitespace(str(text)).replace("\n", "")


@register.filter
def percent(value, digits=1):
    if value is None:
        return "—"
    return f"{100 * float(value):.{int(digits)}f} %"


@register.filter
def mb(value):
    if value is None:
        return "—"
    value = int(value)
    if value >= 1024 * 1024:
        return f"{value / 1024 / 1024:.1f} MB"
    if value >= 1024:
        return f"{value / 1024:.1f} KB"
    return _("%(n)s bytes") % {"n": value}


@register.filter
def shortpath(path):
    """'shards/<64 hex>/train.tokens' -> 'shards/38e365d6…/train.tokens' (the full path goes in a title)."""
    parts = str(path or "").split("/")
    return "/".join(p[:8] + "…" if len(p) > 16 else p for p in parts)
