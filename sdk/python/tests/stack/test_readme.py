"""Runs the python code blocks of sdk/python/README.md, in order, against the stack."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import Receiver, need

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_examples_run(receiver: Receiver) -> None:
    for name in ("EDGEJOBS_URL", "EDGEJOBS_API_KEY", "EDGEJOBS_ADMIN_KEY", "EDGEJOBS_RECEIVER_PORT", "EDGEJOBS_LLM"):
        need(name)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 6, "the README lost its examples"
    scope: dict = {"__name__": "readme"}
    # The README's receiver binds EDGEJOBS_RECEIVER_PORT itself: the session's lets go of it.
    with receiver.released():
        for i, block in enumerate(blocks):
            exec(compile(block, f"README.md python block {i + 1}", "exec"), scope)
    # What each step left behind is checked, not just that it ran.
    assert scope["result"] == {"ok": True}
    assert scope["schedule"].name == "readme-nightly"
    assert scope["got"] == [{"order": 42}]
