from django.urls import reverse

from apps.system.steps import journey_next

# The seven places of the app, in the order of the journey; System last.
NAV = [
    ("data", "Data", "corpora:list"),
    ("tokenizers", "Tokenizers", "tokenization:playground"),
    ("training", "Training", "training:runs"),
    ("generate", "Generate", "inference:generate"),
    ("arena", "Arena", "arena:page"),
    ("explorer", "Explorer", "explorer:page"),
    ("models", "Models", "registry:list"),
    ("system", "System", "system:status"),
]


def navigation(request):
    path = request.path
    items = []
    for key, label, url_name in NAV:
        url = reverse(url_name)
        items.append({"key": key, "label": label, "url": url, "active": path.startswith(url)})
    return {"nav_items": items, "journey_next": journey_next(path)}
