"""The suite's own habits: every subprocess a test starts has a timeout, so a hung child fails its test
instead of stalling CI."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
_BLOCKING = {"run", "check_output", "check_call", "call", "communicate"}


def _calls_without_timeout(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, owner = node.func.attr, node.func.value
        is_subprocess = isinstance(owner, ast.Name) and owner.id == "subprocess" and name in _BLOCKING
        if (is_subprocess or name == "communicate") and not any(k.arg in ("timeout", None) for k in node.keywords):
            found.append(f"{path.relative_to(TESTS.parent)}:{node.lineno}: {name}() without a timeout")
    return found


def test_every_subprocess_call_in_the_tests_has_a_timeout():
    offenders = [line for path in sorted(TESTS.rglob("*.py")) for line in _calls_without_timeout(path)]
    assert not offenders, "\n".join(offenders)
