"""Every Python code block in README.md and docs/*.md runs: each one as a script of its own, in a
fresh folder, so an example that is wrong fails the build."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.processes, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, m in enumerate(BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            line = doc.read_text(encoding="utf-8")[: m.start()].count("\n") + 1
            out.append((f"{doc.relative_to(ROOT)}:{line}#{i}", m.group(1)))
    return out


BLOCKS = _blocks()


def test_the_docs_have_code_blocks():
    assert len(BLOCKS) >= 9


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_code_block_runs(where, code, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
