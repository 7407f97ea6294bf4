"""The layer map of docs/architecture.md, enforced: every import (module-level or inside a
function; type-only imports under ``if TYPE_CHECKING:`` excepted) goes to the same layer or a
lower one, and there is no import cycle, except through the one documented seam."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "covault"

# Bottom to top; a module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("covault.errors", "covault.exitcodes", "covault.schemes")),
    ("ring & encoding", ("covault.ring", "covault.ringmm", "covault.encoding", "covault.bounds")),
    ("randomness", ("covault.randomness",)),
    ("deployment files", ("covault.deploy",)),
    ("transport", ("covault.transport",)),
    ("schemes & primitives", ("covault.protocols",)),
    ("secret types", ("covault.tensor", "covault.tensor_numpy", "covault.booltensor")),
    ("operations", ("covault.ops",)),
    ("runtime", ("covault.session", "covault.runtime", "covault.launch")),
    ("differential privacy", ("covault.privacy",)),
    ("ML", ("covault.nn", "covault.optim", "covault.ml")),
    ("data owners", ("covault.ingest",)),
    ("governance", ("covault.governance",)),
    ("serving", ("covault.serving",)),
    ("jobs", ("covault.jobs",)),
    ("MLOps", ("covault.mlops",)),
    ("federated learning", ("covault.fl",)),
    ("privacy evidence", ("covault.privacy.attacks",)),
    ("console", ("covault.console",)),
    ("CLI", ("covault.cli", "covault.__main__", "covault")),
]

# The seam: secret types offer the operations written against them as methods (x < y,
# x.sigmoid(), np.mean(x), ...), importing them inside those methods; the operations import
# the secret types. Nothing else may import upwards.
SEAM = {
    ("covault.tensor", "covault.ops.compare"),
    ("covault.tensor", "covault.ops.convert"),
    ("covault.tensor", "covault.ops.nonlinear"),
    ("covault.tensor", "covault.tensor_numpy"),
    ("covault.booltensor", "covault.ops.convert"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def _known(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _type_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for inner in ast.walk(sub):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        lines.add(inner.lineno)
    return lines


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_only(tree)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("covault")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if base.startswith("covault"):
                out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {_known(m) for m in out} - {name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    best, length = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > length:
                best, length = i, len(p)
    assert best is not None, f"{name} is in no layer of the map: add it to LAYERS and docs/architecture.md"
    return best


def _seam(a: str, b: str) -> bool:
    return any(a == x and (b == y or b.startswith(y + ".")) for x, y in SEAM)


def test_every_module_is_on_the_map():
    for name in MODULES:
        _layer(name)


def test_no_import_goes_up_the_map():
    up = [
        f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
        for a, deps in sorted(GRAPH.items())
        for b in sorted(deps)
        if _layer(b) > _layer(a) and not _seam(a, b)
    ]
    assert not up, "imports up the layer map:\n" + "\n".join(up)


def test_no_import_cycles():
    edges = {a: {b for b in deps if not _seam(a, b)} for a, deps in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (cycle := visit(w)):
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state and (cycle := visit(v)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_seam_is_real():
    """Every seam edge exists (a stale entry would hide nothing, but should go)."""
    for a, b in SEAM:
        assert any(d == b or d.startswith(b + ".") for d in GRAPH[a]), (a, b)


def test_the_map_is_the_documented_one():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name, _ in LAYERS:
        assert f"| {name} |" in doc, f"layer {name!r} is not in docs/architecture.md's map"


def _doc_rows() -> dict[str, str]:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return {line.split("|")[1].strip(): line for line in doc.splitlines() if line.startswith("| ")}


def test_every_module_prefix_is_in_its_documented_row():
    """Each prefix of LAYERS appears, as a path, in the docs row of its layer."""
    rows = _doc_rows()
    missing = []
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix == "covault":
                path = "covault/__init__.py"
            else:
                parts = prefix.split(".")
                path = "/".join(parts) + ("/" if (ROOT / Path(*parts)).is_dir() else ".py")
            last = path.rstrip("/").rsplit("/", 1)[-1]
            if path not in rows[layer] and f"`{last}" not in rows[layer]:
                missing.append(f"{prefix} ({path}) not in the row of {layer!r}")
    assert not missing, "\n".join(missing)


def test_classes_loaded_by_name_sit_at_or_below_the_runtime():
    """The registries name implementation classes by dotted path (imported by the runtime when
    chosen): the import graph cannot see those edges, so their layers are checked here."""
    from covault import schemes
    from covault.randomness.providers import PROVIDERS

    runtime = next(i for i, (name, _) in enumerate(LAYERS) if name == "runtime")
    paths = [s.impl for s in schemes.SCHEMES.values()] + [p.impl for p in PROVIDERS.values()]
    for path in paths:
        module = _known(path.rsplit(".", 1)[0])
        assert module in MODULES, path
        assert _layer(module) < runtime, f"{path} is loaded by name but sits above the runtime"
    loaders = sorted(a for a, path in MODULES.items() if ".load()" in path.read_text(encoding="utf-8"))
    assert loaders and set(loaders) <= {"covault.session", "covault.protocols.additive"}, loaders
