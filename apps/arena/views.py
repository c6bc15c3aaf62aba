"""The arena's pages: battle (write a prompt, two blind answers stream side by side, vote), the leaderboard, and the
staff's vote log. Each view parses, calls one service or selector, renders; a refusal is a 4xx with its message."""

import json

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.arena import selectors, services
from apps.arena.services import ArenaError


def _htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _client(request) -> str:
    return request.META.get("REMOTE_ADDR", "")


def _page_context(request, **extra) -> dict:
    return {"shortage": selectors.arena_shortage_message(), "max_prompt_chars": services.MAX_PROMPT_CHARS, **extra}


@require_GET
def page(request):
    """The arena: a prompt box; the battle appears below it (arena/_battle.html) when one starts."""
    return render(request, "arena/arena.html", _page_context(request))


@require_POST
def battle_create(request):
    try:
        battle = services.battle_create(user=request.user, prompt=request.POST.get("prompt", ""),
                                        client=_client(request))
    except ArenaError as e:
        if _htmx(request):
            return render(request, "arena/_battle.html", {"error": str(e)}, status=e.status)
        return render(request, "arena/arena.html", _page_context(request, error=str(e),
                                                                  prompt=request.POST.get("prompt", "")),
                      status=e.status)
    if _htmx(request):
        return render(request, "arena/_battle.html", {"battle": selectors.battle_view(battle)})
    return redirect("arena:battle", uid=battle.uid)


def _battle_or_404(request, uid):
    battle = selectors.battle_get(uid=uid, user=request.user)
    if battle is None:
        raise Http404("No such battle of yours: start one on the Arena page.")
    return battle


@require_GET
def battle(request, uid):
    """One battle, rebuilt from the database (the socket adds what is still streaming); ?fragment=1 for htmx."""
    view = selectors.battle_view(_battle_or_404(request, uid))
    if _htmx(request):
        return render(request, "arena/_battle.html", {"battle": view})
    return render(request, "arena/arena.html", _page_context(request, battle=view, prompt=view["prompt"]))


@require_POST
def vote(request, uid):
    battle = selectors.battle_by_uid(uid)
    if battle is None:
        error, status, view = "No such battle: start one on the Arena page.", 404, None
    else:
        try:
            services.vote_create(battle=battle, user=request.user, choice=request.POST.get("choice"))
            error, status = None, 200
        except ArenaError as e:
            error, status = str(e), e.status
        mine = request.user.is_authenticated and battle.user_id == request.user.id
        view = selectors.battle_view(battle) if mine else None
    if _htmx(request):
        return render(request, "arena/_battle.html", {"battle": view, "error": error}, status=status)
    if error:
        return render(request, "arena/arena.html", _page_context(request, battle=view, error=error), status=status)
    return redirect("arena:battle", uid=battle.uid)


@require_GET
def leaderboard(request):
    board = selectors.leaderboard()
    template = "arena/_leaderboard.html" if _htmx(request) else "arena/leaderboard.html"
    return render(request, template, {"board": board})


@staff_member_required
@require_GET
def votes_export(request):
    """The vote log, one JSON object a line (staff only: it names users)."""
    lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in selectors.vote_log())
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="arena-votes.jsonl"'
    return response
