"""The package's shape: modules import each other without cycles (function-level imports included)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gra_stream"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    names = {module_name(p) for p in PACKAGE.rglob("*.py")}
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gra_stream"):
                submodules = {f"{node.module}.{a.name}" for a in node.names} & names
                deps |= submodules | ({node.module} if len(submodules) < len(node.names) else set())
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & names
        graph[module_name(path)] = deps - {module_name(path)}
    return graph


def test_no_import_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(name, stack):
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [name, dep])
            elif dep not in state:
                visit(dep, stack + [name])
        state[name] = "done"
    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    graph = {"a": {"b"}, "b": {"a"}}
    monkeypatch.setattr("tests.test_package.import_graph", lambda: graph)
    try:
        test_no_import_cycle()
    except AssertionError:
        return
    raise AssertionError("a two-module cycle went unnoticed")


def test_no_module_over_400_lines():
    assert [p.name for p in PACKAGE.rglob("*.py") if len(p.read_text().splitlines()) > 400] == []


def test_every_subpackage_is_in_the_wheel():
    """pyproject.toml lists packages explicitly (configs/ and sql/ are mapped into the package): a package
    missing there would be missing from every wheel."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert on_disk <= listed and {"gra_stream.configs", "gra_stream.sql", "gra_stream.sql.filters"} <= listed


def test_a_run_imports_neither_pandas_nor_scipy(tmp_path):
    """A run's processes start without pandas or scipy, whose imports delay a worker's first batch
    (pyarrow imports pandas to build arrays from Python values or to read through
    its datasets; datasketch imports scipy). Two fake runs in one process, the second with new seeds, so
    that earlier segments' sidecars are read too; then the modules that process loaded."""
    from tests.conftest import corpus, head_jsonl, python_child

    first = head_jsonl(corpus("gsm8k_train"), tmp_path / "first.jsonl", 20)
    more = head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path / "more.jsonl", 20)
    code = (f"import sys\nfrom pathlib import Path\nfrom tests.conftest import run_fake\n"
            f"for seeds in ([{str(first)!r}], [{str(first)!r}, {str(more)!r}]):\n"
            f"    run_fake(map(Path, seeds), Path({str(tmp_path / 'run')!r}))\n"
            f"print(sorted(m for m in ('pandas', 'scipy') if m in sys.modules))\n")
    out = python_child(code)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
