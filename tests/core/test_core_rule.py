"""The rule for ``bts_studio/core`` (docs/architecture.md): torch-only, no framework or method imports, and a
declared public surface (``__all__``) whose names exist."""

import ast
import importlib
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "bts_studio" / "core"
ALLOWED_ROOTS = {"torch", "jaxtyping", "typing", "dataclasses", "math", "__future__", "bts_studio"}
MODULES = sorted(path.stem for path in CORE.glob("*.py") if path.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_core_module_is_torch_only_and_declares_its_surface(name):
    tree = ast.parse((CORE / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
            if node.module and node.module.startswith("bts_studio"):
                assert node.module.startswith("bts_studio.core"), f"core/{name}.py imports {node.module}"
        else:
            continue
        assert roots <= ALLOWED_ROOTS, f"core/{name}.py imports {roots - ALLOWED_ROOTS}"
    module = importlib.import_module(f"bts_studio.core.{name}")
    assert isinstance(getattr(module, "__all__", None), list), f"core/{name}.py declares no __all__"
    assert all(hasattr(module, public) for public in module.__all__)
