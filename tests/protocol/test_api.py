"""The public surface of ``trio_backtest.protocol``: curated, complete and sans I/O."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import trio_backtest.protocol as protocol


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(protocol.__all__) == public
    assert len(protocol.__all__) == len(set(protocol.__all__))


def test_no_protocol_module_imports_trio() -> None:
    package = Path(protocol.__file__).parent
    sources = sorted(package.glob("*.py"))
    assert len(sources) >= 7
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & {"trio", "trio_websocket"}, f"{source.name} imports {roots}"
