"""The layers: worldflow/ (the library) imports nothing of envs/, policies/ or eval/; envs/ and policies/
import nothing of eval/ (the application). Checked on every import statement, top-level or inside a
function; the application's own steps reach the library only through names in a config
(e.g. robot.embedded.writer)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"worldflow": {"envs", "policies", "eval"}, "envs": {"eval", "policies"}, "policies": {"eval"}}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_upwards(package):
    bad = [
        f"{p.relative_to(ROOT)} imports {sorted(imported_packages(p) & FORBIDDEN[package])}"
        for p in sorted((ROOT / package).rglob("*.py"))
        if imported_packages(p) & FORBIDDEN[package]
    ]
    assert not bad, bad


def test_the_checker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from eval.collect import collect\n    import envs.suite\n")
    assert imported_packages(f) == {"eval", "envs"}


def test_a_bad_embedded_writer_is_named():
    from worldflow.errors import ConfigError
    from worldflow.finetune import load_entry_point

    with pytest.raises(ConfigError, match="robot.embedded.writer='nowhere.module:f'"):
        load_entry_point("nowhere.module:f", "robot.embedded.writer")
    with pytest.raises(ConfigError, match="package.module:function"):
        load_entry_point("json:no_such_function", "robot.embedded.writer")
    assert load_entry_point("json:dumps", "k")([1]) == "[1]"
