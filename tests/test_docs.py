"""Every ```python block of the documentation runs: the blocks of one page run in
order as one script (a page may use names an earlier block defined), in a fresh
interpreter, in a scratch folder. Signatures and output go in plain ``` fences."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_python_blocks_of_the_page_run(page, tmp_path):
    script = "\n\n".join(f"# --- block {i + 1} of {page.name}\n{code}"
                         for i, code in enumerate(blocks(page)))
    # As a script, as a user would paste it: `if __name__ == "__main__":` guards (Dask) hold.
    # XLA_FLAGS: the backend optimizations off, as in the whole suite (conftest.py).
    (tmp_path / "page.py").write_text(script)
    done = subprocess.run([sys.executable, "page.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={"JAX_PLATFORMS": "cpu",
                                                       "PATH": "/usr/bin:/bin",
                                                       "HOME": str(tmp_path),
                                                       "XLA_FLAGS": os.environ["XLA_FLAGS"]})
    assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"


def test_the_fence_finder_sees_every_python_block():
    text = "a\n```python\nx = 1\n```\n```\nnot run\n```\n```python\ny = x\n```\n"
    page = Path("page.md")
    assert FENCE.findall(text) == ["x = 1\n", "y = x\n"]
    assert page.suffix == ".md"
