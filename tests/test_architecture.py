"""The shape of the code, checked from its imports (read with ``ast``, nothing imported):

* no import cycle among the modules of ``oms_ops``, ``pipelines`` and ``dashboards`` — imports inside
  functions count too, so a function-local import cannot hide a cycle;
* ``oms_ops`` never imports ``simulators`` (they are outside systems), and ``simulators`` imports nothing of
  ``oms_ops`` but the shared wire formats (``oms_ops.wire``);
* dependencies point one way: entry points (dashboards, pipelines, the CLI) → services → domain and
  channels → platform; the domain and the platform never import services, channels or entry points;
* the channel registry is the only list of channels: no literal collection outside ``oms_ops/channels``
  names two channel codes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from oms_ops.channels import registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("oms_ops", "pipelines", "dashboards")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources(*packages: str) -> dict[str, Path]:
    out = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _sources(*PACKAGES)
SIMULATORS = _sources("simulators")


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """``(imported module, inside a function)`` for every import of the file; ``from a import b`` yields
    ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = module.split(".")
                    keep = len(parts) - child.level + (1 if is_pkg else 0)
                    base = ".".join(parts[:keep] + ([base] if base else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES or full in SIMULATORS else base, inner))
            visit(child, inner)

    visit(tree, False)
    return found


def _project_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _ in _imports(path, module):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                edges[module].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def _is_package_parent(importer: str, imported: str) -> bool:
    """Importing ``a.b`` runs ``a/__init__``: an edge from a submodule to its own package is not a cycle."""
    return importer.startswith(imported + ".")


def test_no_import_cycles():
    edges = {m: {t for t in ts if not _is_package_parent(m, t)} for m, ts in _project_edges().items()}
    assert _cycles(edges) == []


def test_the_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_oms_ops_never_imports_the_simulators():
    bad = [
        f"{m} imports {t}"
        for m, path in MODULES.items()
        if m.startswith("oms_ops")
        for t, _ in _imports(path, m)
        if t == "simulators" or t.startswith("simulators.")
    ]
    assert bad == []


def test_simulators_import_only_the_wire_formats_of_oms_ops():
    bad = [
        f"{m} imports {t}"
        for m, path in SIMULATORS.items()
        for t, _ in _imports(path, m)
        if t.startswith("oms_ops") and not (t == "oms_ops.wire" or t.startswith("oms_ops.wire."))
    ]
    assert bad == []


def _layer(module: str) -> int:
    """0 platform and wire formats, 1 domain and channels, 2 services, 3 entry points (the API too)."""
    if module.startswith(("oms_ops.platform", "oms_ops.wire")):
        return 0
    if module.startswith("oms_ops.services"):
        return 2
    entry_points = ("pipelines", "dashboards", "oms_ops.api")
    cli_modules = (
        "oms_ops.cli",
        "oms_ops.worker",
        "oms_ops.backtest_cli",
        "oms_ops.changes_cli",
        "oms_ops.unfillable_cli",
        "oms_ops.shipment_cancel_cli",
        "oms_ops.supply_cli",
        "oms_ops.api_keys_cli",
        "oms_ops.cli_support",
        "oms_ops.notifications_cli",
        "oms_ops.onec_cli",
    )
    if module.startswith(entry_points) or module in cli_modules:
        return 3
    return 1


ALLOWED_UPWARD = {
    # the business configuration is validated before anything starts (it is pure data: no OMS imports)
    ("oms_ops.platform.stack", "oms_ops.business_config"),
}


def test_dependencies_point_one_way():
    bad = [
        f"{m} → {t}"
        for m, targets in _project_edges().items()
        for t in targets
        if _layer(t) > _layer(m) and (m, t) not in ALLOWED_UPWARD
    ]
    assert bad == []


def test_the_domain_never_imports_channels():
    bad = [
        f"{m} → {t}"
        for m, targets in _project_edges().items()
        if _layer(m) == 1 and not m.startswith(("oms_ops.channels", "oms_ops.connectors"))
        for t in targets
        if t.startswith("oms_ops.channels")
    ]
    assert bad == []


def _channel_literals(path: Path) -> list[str]:
    codes = {c.code for c in registry.CHANNELS}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # a type's values (``Literal["webstore", "callcentre"]``, channel kinds) are not a list of channels
    subscripts = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
    found = []
    for node in ast.walk(tree):
        if id(node) in subscripts:
            continue
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            elts = node.elts
        elif isinstance(node, ast.Dict):
            elts = [k for k in node.keys if k is not None]
        else:
            continue
        named = {e.value for e in elts if isinstance(e, ast.Constant) and e.value in codes}
        if len(named) >= 2:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(named)}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_the_registry_is_the_only_list_of_channels(package):
    channels_dir = ROOT / "oms_ops" / "channels"
    bad = [
        hit
        for path in sorted((ROOT / package).rglob("*.py"))
        if channels_dir not in path.parents
        for hit in _channel_literals(path)
    ]
    assert bad == []


#: what entry points may import of oms_ops: the use cases, the read side, and the plumbing they are built on
ENTRY_POINT_ALLOWED = (
    "oms_ops.services",
    "oms_ops.read_model",
    "oms_ops.dashboard_queries",
    "oms_ops.queries",
    "oms_ops.invariants",
    "oms_ops.errors",
    "oms_ops.users",
    "oms_ops.business_config",
    "oms_ops.db",
    "oms_ops.platform",
    "oms_ops.analytics",
    "oms_ops.channels.registry",
    "oms_ops.channels.base",
    "oms_ops.connectors.config",
    "oms_ops.connectors.http",
)


def test_entry_points_call_services_not_the_domain():
    bad = [
        f"{m} → {t}"
        for m, targets in _project_edges().items()
        if _layer(m) == 3
        for t in targets
        if t.startswith("oms_ops")
        and not any(t == a or t.startswith(a + ".") for a in ENTRY_POINT_ALLOWED)
        and _layer(t) < 3
    ]
    assert bad == []
