"""The web process never imports torch: only workers/ may (DESIGN.md)."""

import subprocess
import sys
from pathlib import Path

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


def test_web_side_imports_no_torch():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "modules imported" in result.stdout
