"""`{% load evals %}`: the Evaluations section a model's page includes, the lineage table a run's page includes,
and the filters that write a score with its interval."""

from django import template

from apps.evals import selectors

register = template.Library()


@register.inclusion_tag("evals/_evaluations.html", takes_context=True)
def model_evaluations(context, model):
    """The Evaluations section of a model's page (rendered in place; htmx re-renders it after a form post)."""
    request = context.get("request")
    section = selectors.model_section(model=model, user=getattr(request, "user", None))
    return section | {"request": request, "csrf_token": context.get("csrf_token")}


@register.inclusion_tag("evals/_run-lineage.html", takes_context=True)
def run_evaluations(context, run):
    """On a run's page: the lineage table of the model the run produced, or else of the model it started from."""
    request = context.get("request")
    user = getattr(request, "user", None)
    model = selectors.run_model(run=run, user=user)
    table = selectors.lineage_table(model=model, user=user) if model is not None else None
    return {"run": run, "model": model, "table": table, "request": request, "csrf_token": context.get("csrf_token"),
            "may_evaluate": selectors.may_evaluate(model=model, user=user) if model is not None else False}


@register.filter
def score(value, lower_is_better=False):
    """A score as a page shows it: a share as '42.0 %', a loss as '1.234'; None -> '—'."""
    if value is None:
        return "—"
    return f"{float(value):.3f}" if lower_is_better else f"{100 * float(value):.1f} %"


@register.filter
def interval(view):
    """'[35.1 – 49.2]' for a dict with low and high shares; '' when there is none (a loss)."""
    low, high = (view or {}).get("low"), (view or {}).get("high")
    if low is None or high is None:
        return ""
    return f"[{100 * low:.1f} – {100 * high:.1f}]"


@register.filter
def delta(cell, lower_is_better=False):
    """'+12.0 pts' for a share, '−0.152' for a loss; '' for the first model of a row."""
    if not cell or cell.get("delta") is None:
        return ""
    d = cell["delta"]
    sign = "+" if d >= 0 else "−"
    return f"{sign}{abs(d):.3f}" if lower_is_better else f"{sign}{100 * abs(d):.1f} pts"
