"""The package layering holds: lower layers never import higher ones (issue 18 item 5).

Every import statement of every module is read (function-level imports included, since the CLI's
lazy-import style puts many there), so a dependency that points up fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import speechllm

ROOT = Path(speechllm.__file__).parent
LOW = ("audio", "utils", "config", "data", "models", "llm_runtime")
HIGH = ("describe", "generate", "train", "eval", "infer", "cli")


def _imports(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
    return out


def _violations() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        layer = rel.split("/")[0].removesuffix(".py")
        for name, line in _imports(path):
            parts = name.split(".")
            if parts[0] == "data_prep" and layer != "cli":  # the CLI discovers the importers
                found.append(f"{rel}:{line} imports {name} (data_prep uses speechllm.data, never the reverse)")
            if parts[0] != "speechllm" or len(parts) < 2:
                continue
            if layer in LOW and parts[1] in HIGH:
                found.append(f"{rel}:{line} imports {name}")
            if layer == "generate" and parts[1] == "eval":
                found.append(f"{rel}:{line} imports {name} (generate must not import eval)")
    return found


def test_lower_layers_do_not_import_higher_ones():
    assert _violations() == []


def test_no_library_module_names_data_prep_in_a_string():
    offenders = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
                 if "import_module(f\"data_prep" in p.read_text(encoding="utf-8")
                 or "import_module(\"data_prep" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_the_check_sees_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from speechllm.train import trainer\n", encoding="utf-8")
    assert _imports(module) == [("speechllm.train", 2)]
