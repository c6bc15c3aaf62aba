import hashlib
import re
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[3] / "static" / "vendor"


def test_every_vendored_file_matches_the_hash_in_vendored_md():
    rows = re.findall(r"^\| [^|]+ \| [^|]+ \| (\S+) \| ([0-9a-f]{64}) \|", (VENDOR / "VENDORED.md").read_text(), re.M)
    assert len(rows) >= 2
    for path, digest in rows:
        assert hashlib.sha256((VENDOR / path).read_bytes()).hexdigest() == digest, path


def test_base_template_loads_only_vendored_scripts():
    base = (VENDOR.parent.parent / "templates" / "base.html").read_text()
    assert "http" not in re.sub(r"<!--.*?-->", "", "".join(re.findall(r"<script[^>]*>", base)))
