"""The package's shape: no import cycle between its modules (deferred imports inside functions count too),
and one place that computes the referral scores; the install names every package. No data set needed."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("lesion_pl", "export")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (PROJECT / package).rglob("*.py"):
            parts = path.relative_to(PROJECT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The project modules `name` imports anywhere in its file (a package's own submodules left out)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return {m for m in found if m in modules and m != name and not m.startswith(name + ".")
            and not name.startswith(m + ".")}


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]):
        for dep in graph[name]:
            assert dep not in path, "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in done:
                visit(dep, path + [dep])
        done.add(name)

    for name in graph:
        visit(name, [name])
    assert {"lesion_pl.scoring", "lesion_pl.calibration", "lesion_pl.clinical"} <= set(graph)


def test_the_malignant_classes_are_summed_in_one_place():
    """Every other module asks lesion_pl.scoring (or the policy) for a score; none sums class columns itself."""
    summing = re.compile(r"\[[^\]]*(?:malignant|MALIGNANT|score_indices|indices\()[^\]]*\]\s*\.sum\(")
    found = [f"{p.relative_to(PROJECT)}:{i}" for p in _modules().values()
             for i, line in enumerate(p.read_text().splitlines(), 1) if summing.search(line)]
    assert found == ["lesion_pl/scoring.py:" + found[0].split(":")[1]] and len(found) == 1, found


def test_ci_stops_in_one_line_where_the_browser_or_node_cannot_be_installed(tmp_path):
    """Without chromium, its driver and node, and no apt-get to install them, .ci/run fails at once (it never
    reaches `make test`, whose browser tests would fail anyway) instead of warning and going on."""
    import os
    import shutil
    import subprocess

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("dirname", "make"):  # make: were it reached, it would say so
        os.symlink(shutil.which(tool), bin_ / tool)
    proc = subprocess.run([shutil.which("bash"), str(PROJECT / ".ci" / "run")], capture_output=True, text=True,
                          env={"PATH": str(bin_), "HOME": str(tmp_path)}, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == ("error: could not install chromium chromium-driver nodejs (apt-get); the browser and "
                           "JavaScript tests need them\n")


def test_no_module_but_the_configs_reads_a_raw_config_section():
    """The configuration is typed (lesion_pl/config/): code takes `cfg.data`, `cfg.trainer` ..., never a subscript or
    a .get of a section or a key on a config or one of its sections."""
    pattern = re.compile(r"""\b(\w*cfg|config|\w+_config)(\[["']|\.get\(["'])""")
    found = []
    for path in sorted([*(PROJECT / "lesion_pl").rglob("*.py"), *(PROJECT / "export").rglob("*.py"),
                        PROJECT / "cli.py"]):
        if "config" in path.relative_to(PROJECT).parts[:2]:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                found.append(f"{path.relative_to(PROJECT)}:{n}: {line.strip()}")
    assert found == [], "\n".join(found)
