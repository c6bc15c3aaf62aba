from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from apps.system.steps import journey_next

# The seven places of the app, in the order of the journey; System last.
NAV = [
    ("data", _("Data"), "corpora:list"),
    ("tokenizers", _("Tokenizers"), "tokenization:playground"),
    ("training", _("Training"), "training:runs"),
    ("generate", _("Generate"), "inference:generate"),
    ("arena", _("Arena"), "arena:page"),
    ("explorer", _("Explorer"), "explorer:page"),
    ("models", _("Models"), "registry:list"),
    ("system", _("System"), "system:status"),
]


def navigation(request):
    path = request.path
    items = []
    for key, label, url_name in NAV:
        url = reverse(url_name)
        items.append({"key": key, "label": label, "url": url, "active": path.startswith(url)})
    return {"nav_items": items, "journey_next": journey_next(path)}
