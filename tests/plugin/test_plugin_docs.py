"""docs/pytest-plugin.md shows runnable code: each of its Python blocks is a test in tests/plugin, verbatim."""

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent.parent / "docs" / "pytest-plugin.md"


def test_every_python_block_of_the_page_is_a_test_here():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2
    example = (HERE / "test_plugin_example.py").read_text()
    assert blocks[0] == example
    assert blocks[1] in (HERE / "test_plugin_helpers.py").read_text()
