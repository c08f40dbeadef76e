"""No code path may import torchvision: it has no CPU build for the pinned torch and breaks at import."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_imports_without_torchvision():
    modules = ["app"]
    for pkg in ("models", "editing", "scripts"):
        modules += [m.name for m in pkgutil.walk_packages([str(ROOT / pkg)], prefix=f"{pkg}.")]
    modules = [m for m in modules if not m.endswith("__main__")]
    assert len(modules) > 15
    code = (
        "import sys, importlib\n"
        # make any attempt to import torchvision fail loudly instead of silently succeeding
        "sys.modules['torchvision'] = None\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "import transformers; transformers.CLIPModel; transformers.CLIPTokenizer\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
