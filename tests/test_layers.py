"""The apps' layers, read from the source with ast (nothing is imported): which app imports which, whether an app's
selectors (reads) import its services (writes), and which imports hide inside functions.

The rules (STYLE.md, issue 9):
- no import cycle between apps, beyond the edges in KNOWN_EDGES, each with the reason it is there;
- an app's selectors never import its services: exceptions and permission predicates that both need live in the
  app's errors.py / permissions.py, so the services may read through the selectors without a cycle;
- no function-local import of another app (`def f(): from apps.other import x`): it hides a dependency from a reader
  and from this test's graph. LOCAL_IMPORTS lists the ones allowed, each with its reason.
A management command orchestrates several apps the way a URL conf does, so apps/*/management/ is not part of the graph.
workers/ is glue, not an app: it imports apps inside its task functions so a worker process loads Django first.
"""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "apps"

# (importer, imported): why the edge exists although the imported app also imports the importer
KNOWN_EDGES = {
    ("registry", "training"): "a model is promoted from a run's checkpoint (registry reads training), and a "
                              "fine-tuning or GRPO run starts from a registry model and registers its result "
                              "(training reads and writes registry through registry's services). A derived-model "
                              "service called from the worker glue instead of apps/training would remove the edge.",
    ("corpora", "registry"): "the conversation preview (apps/corpora/views_conversations.py) renders a conversation "
                             "through a registry model's chat template and tokenizer; moving the preview's model "
                             "lookup behind a registry selector the view receives would remove the edge.",
    ("corpora", "tokenization"): "a corpus's Shards are its text encoded with a tokenizer (Shards.tokenizer is a "
                                 "foreign key to tokenization.Tokenizer), and shards_ensure reads the tokenizer to "
                                 "encode; tokenization in turn trains on a corpus. Moving Shards into an app of their "
                                 "own would remove the cycle.",
    ("system", "training"): "apps/system/devices.py records device profiles in training's DeviceProfile table: the "
                            "service moved to system (a system concern) before the table did, which needs a migration "
                            "in both apps. (journey_progress, below, reads training's selectors too.)",
}

JOURNEY = ("apps/system/selectors.py journey_progress (the home page's 'your journey' summary) reads each step's own "
           "selector, importing them inside the function: system is the layer every app imports. It would leave the "
           "graph as a small module above the apps (a home page aggregator the apps never import).")
for _app in ("corpora", "registry", "tokenization"):
    KNOWN_EDGES[("system", _app)] = JOURNEY

# (module path relative to the repo, imported module): why it must be imported inside a function
LOCAL_IMPORTS: dict[tuple[str, str], str] = {
    ("apps/system/selectors.py", f"apps.{app}.selectors"): JOURNEY
    for app in ("corpora", "registry", "tokenization", "training")
}


def _modules():
    for path in sorted(APPS.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if "migrations" in rel.parts or "management" in rel.parts:
            continue
        yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))


def _imported(node) -> list[str]:
    """The modules an import statement names: `from apps.x import y` names apps.x.y (y is a module or a name in
    apps/x/__init__.py, which is empty), `from apps.x.y import z` names apps.x.y."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module.count(".") <= 1:
            return [f"{node.module}.{a.name}" for a in node.names]
        return [node.module]
    return []


def _app_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "apps" and len(parts) > 1 and (APPS / parts[1]).is_dir():
        return parts[1]
    return None


def _imports():
    """(module path, imported module, inside a function?) for every import of an app module under apps/."""
    for rel, tree in _modules():
        local = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            for module in _imported(node):
                if _app_of(module):
                    yield rel, module, id(node) in local


def _app_graph() -> dict[str, dict[str, set[str]]]:
    """importer app -> imported app -> the files that import it."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for rel, module, _ in _imports():
        src, dst = rel.parts[1], _app_of(module)
        if src != dst:
            graph[src][dst].add(str(rel))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in a directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}}) is None


def test_no_import_cycle_between_apps():
    graph = _app_graph()
    edges = {src: {dst for dst in dsts if (src, dst) not in KNOWN_EDGES} for src, dsts in graph.items()}
    cycle = _cycle(edges)
    where = [f"{a} -> {b}: {sorted(graph[a][b])}" for a, b in zip(cycle, cycle[1:])] if cycle else []
    assert cycle is None, ("the apps import each other in a circle: " + " -> ".join(cycle or []) + "\n" +
                           "\n".join(where) + "\nmove what both need (an exception, a predicate) to the app that "
                           "owns it, or call through the owning app's service or selector")


def test_every_known_edge_is_still_there():
    graph = _app_graph()
    gone = [edge for edge in KNOWN_EDGES if edge[1] not in graph.get(edge[0], {})]
    assert not gone, f"these app imports are gone: delete them from KNOWN_EDGES: {gone}"


def test_no_app_s_selectors_import_its_services():
    offenders = [f"{rel} imports {module}" for rel, module, _ in _imports()
                 if rel.name == "selectors.py" and module.startswith(f"apps.{rel.parts[1]}.services")]
    assert not offenders, ("selectors (reads) must not import services (writes): move the exception to errors.py "
                           f"or the predicate to permissions.py: {offenders}")


def test_no_function_local_import_of_another_app_beyond_the_listed_ones():
    found = {(str(rel), module) for rel, module, local in _imports()
             if local and _app_of(module) != rel.parts[1]}
    unlisted = sorted(found - set(LOCAL_IMPORTS))
    assert not unlisted, ("import these at the top of the module (or list them in LOCAL_IMPORTS with the reason "
                          f"they cannot be): {unlisted}")
    stale = sorted(set(LOCAL_IMPORTS) - found)
    assert not stale, f"no longer imported inside a function: delete them from LOCAL_IMPORTS: {stale}"


def test_the_graph_sees_the_apps_real_imports():
    graph = _app_graph()
    assert "registry" in graph["inference"] and "system" in graph["training"]
