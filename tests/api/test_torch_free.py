"""The API process must not pay torch's import time and memory (~3.6 s, ~800 MiB)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_api_leaves_torch_out() -> None:
    code = (
        "import sys; import api.main; api.main.create_app(); "
        "print('torch' in sys.modules, 'torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
