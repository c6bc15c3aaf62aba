"""Numbers as people read them: 0.80M parameters, 3.9 GFLOP, 1 min 40 s; and the form fields a fieldset shows."""

import math

from django import template

register = template.Library()

_PREFIXES = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


@register.filter
def si(value, unit=""):
    """1234567 -> "1.23 M" (plus unit); small numbers stay as they are."""
    if value is None or value == "":
        return "—"
    value = float(value)
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


@register.filter
def duration(seconds):
    """Seconds -> "45 s", "3 min 20 s", "2 h 05 min", "3 d 4 h"; "< 1 s" for a fraction of a second."""
    if seconds is None or seconds == "":
        return "—"
    if 0 < float(seconds) < 0.5:
        return "< 1 s"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


@register.filter
def step_time(seconds):
    """Seconds per step -> "85 ms" below a second, else as `duration`."""
    if seconds is None or seconds == "":
        return "—"
    return f"{float(seconds) * 1000:.0f} ms" if float(seconds) < 1 else duration(seconds)


@register.filter
def percent(value, digits=0):
    if value is None or value == "":
        return "—"
    return f"{100 * float(value):.{int(digits)}f} %"


@register.filter
def loss(value):
    if value is None or value == "":
        return "—"
    return f"{float(value):.4f}"


@register.filter
def perplexity(value):
    if value is None or value == "":
        return "—"
    return f"{math.exp(float(value)):.2f}"


@register.filter
def get(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def fields(form, names: str) -> list:
    """The form's bound fields named (separated by spaces), in that order, for training/_fieldset.html; a name the
    form lacks is a template mistake and raises KeyError as form[name] does."""
    return [form[name] for name in names.split()]
