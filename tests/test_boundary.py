"""The web process never imports torch: only workers/ may (DESIGN.md). The web side's door into the model library
is the torch-free half of workers/gpt, named in workers/gpt/__init__.py's TORCH_FREE; these tests check that every
`apps.* -> workers.gpt.*` import goes through that door, and that nothing behind it imports torch or Django."""

import ast
import subprocess
import sys
from pathlib import Path

from workers.gpt import TORCH_FREE

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib, os, pkgutil, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
import django
django.setup()
import config.asgi, config.urls, config.celery, workers.tasks
import apps
names = [m.name for m in pkgutil.walk_packages(apps.__path__, "apps.")]
for name in names:
    importlib.import_module(name)
assert len(names) > 5, names
leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(len(names), "modules imported")
sys.exit(f"torch was imported by the web side: {leaked[:5]}" if leaked else 0)
"""

# A fresh interpreter imports the torch-free modules alone (no Django set up) and reports what came with them.
LIBRARY_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "django", "apps"})))
"""


def test_web_side_imports_no_torch():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "modules imported" in result.stdout


def _library_imports_of_apps() -> dict[str, list[str]]:
    """Every workers.gpt module that code under apps/ imports (at module level or inside a function), with where."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "apps").rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=where)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from workers.gpt import tokenizers` imports the module workers.gpt.tokenizers
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                names = [n for n in names if n == node.module or _is_module(n)]
            else:
                continue
            for name in names:
                if name == "workers.gpt" or name.startswith("workers.gpt."):
                    found.setdefault(name, []).append(f"{where}:{node.lineno}")
    return found


def _is_module(name: str) -> bool:
    parts = name.split(".")
    base = ROOT.joinpath(*parts)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def test_the_web_side_imports_only_the_torch_free_half_of_the_library():
    found = _library_imports_of_apps()
    assert "workers.gpt.tokenizers" in found and "workers.gpt.config" in found, "the scan finds the known imports"
    outside = {name: where for name, where in found.items() if name not in TORCH_FREE}
    assert not outside, (f"apps/ imports workers.gpt modules that are not in workers/gpt/__init__.py's TORCH_FREE: "
                         f"{outside}; import a torch-free module instead, or (if it truly needs no torch) add it there")


def test_the_torch_free_half_imports_neither_torch_nor_django():
    result = subprocess.run([sys.executable, "-c", LIBRARY_PROBE, *TORCH_FREE], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"the torch-free modules pulled in {result.stdout.strip()}"
