"""Print the architecture numbers that say how costly a change is: import cycles, private names
imported across modules, the longest function, the longest sdk/ file, and how many files name one
target or one student family.

    python scripts/arch_metrics.py            # table
    python scripts/arch_metrics.py --json     # the same as JSON
    python scripts/arch_metrics.py --list     # also every cycle and private import found

Static (``ast``) only: nothing is imported. Imports inside functions count like top-level ones. The
import graph has one node per module of ours (sdk/ is ``edgesdk``, runtime/ ``edgesdk.runtime``,
models/ ``edgesdk.models``, converters/ ``edgesdk.converters``); ``from P import N`` is an edge to the
submodule ``P.N`` when there is one, otherwise to ``P``. "Files that name a target" counts the source
files of the four packages whose code holds the target's name or its runtime backend's name as a
string constant, or imports its backend module (for a family: its plug-in module): a proxy for the
files a new target or family must touch. "Plug-in targets" are those of tests/plugins/ (a converter
in targets/, a backend in backends/, loaded by the test suite through `runtime.plugins`): for each,
its own files there and the other files (packages, tests, scripts, benchmarks) naming it,
its own test file ``tests/test_<converter file stem>_target.py`` aside.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"sdk": "edgesdk", "runtime": "edgesdk.runtime", "models": "edgesdk.models",
            "converters": "edgesdk.converters"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> source file, for every .py file of the four packages."""
    out = {}
    for folder, prefix in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def _resolve(name: str, modules: dict) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of our modules."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def imports_of(module: str, path: Path, modules: dict):
    """Yield ``(target_module, imported_name_or_None, lineno)`` for every import of ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target:
                    yield target, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if _resolve(base, modules) is None:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    yield sub, None, node.lineno
                else:
                    yield _resolve(base, modules), alias.name, node.lineno


def import_graph(modules: dict) -> dict[str, set[str]]:
    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, _, _ in imports_of(mod, path, modules):
            if target != mod:
                graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(modules: dict) -> list[tuple[str, str, str, int]]:
    """``(importer, module, name, line)``: a module of ours importing another module's ``_name``
    (``from m import _x``) or reading it through a module alias (``import m as a; a._x``)."""
    out = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        aliases = {}  # local name -> our module it is bound to
        for target, name, line in imports_of(mod, path, modules):
            if name is not None and _private(name) and target != mod:
                out.append((mod, target, name, line))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in modules:
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else None
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    if sub in modules:
                        aliases[a.asname or a.name] = sub
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                target = None
                if isinstance(node.value, ast.Name):
                    target = aliases.get(node.value.id)
                else:  # edgesdk.runtime.session._x written out in full
                    dotted = _dotted(node.value)
                    target = dotted if dotted in modules else None
                if target and target != mod:
                    out.append((mod, target, node.attr, node.lineno))
    return sorted(set(out))


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def longest_functions(modules: dict, n: int = 5) -> list[tuple[int, str]]:
    rows = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)[:n]


def longest_files(folder: str, n: int = 5) -> list[tuple[int, str]]:
    rows = [(len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(ROOT)))
            for p in (ROOT / folder).rglob("*.py")]
    return sorted(rows, reverse=True)[:n]


def files_naming(names: set[str], backend_modules: set[str], modules: dict) -> list[str]:
    """Source files whose code holds one of ``names`` as a string constant or imports one of
    ``backend_modules``."""
    hits = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        imported = {t for t, _, _ in imports_of(mod, path, modules)}
        if strings & names or imported & backend_modules or mod in backend_modules:
            hits.append(str(path.relative_to(ROOT)))
    return sorted(hits)


def _registered(decorator: str, modules: dict) -> dict[str, Path]:
    """Names registered with ``@decorator("name")`` or class ``name = "..."`` under ``@decorator``."""
    out = {}
    for path in modules.values():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            for dec in node.decorator_list:
                fn = dec.func if isinstance(dec, ast.Call) else dec
                fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if fname != decorator:
                    continue
                if isinstance(dec, ast.Call) and dec.args and isinstance(dec.args[0], ast.Constant):
                    out[dec.args[0].value] = path
                elif isinstance(node, ast.ClassDef):
                    fields = {t.id: s.value.value for s in node.body if isinstance(s, ast.Assign)
                              for t in s.targets if isinstance(t, ast.Name) and isinstance(s.value, ast.Constant)}
                    if "name" in fields:
                        out[fields["name"]] = (path, fields.get("backend"))
    return out


def plugin_targets(root: Path = ROOT) -> dict[str, dict]:
    """For each plug-in target in tests/plugins/targets/: ``{"own": files there and in
    tests/plugins/backends/ naming it, "elsewhere": other .py files naming it}``."""
    out = {}
    plugins = root / "tests" / "plugins"
    for path in sorted((plugins / "targets").glob("*.py")):
        name = _registered("register_target", {path.stem: path})
        for target in name:
            own_test = root / "tests" / f"test_{path.stem}_target.py"
            hits = []
            files = [f for folder in (*PACKAGES, "tests", "scripts", "benchmarks") for f in (root / folder).rglob("*.py")]
            for f in sorted(files):
                if f == own_test:
                    continue
                text = f.read_text(encoding="utf-8")
                if target in text and any(isinstance(n, ast.Constant) and n.value == target
                                          for n in ast.walk(ast.parse(text, str(f)))):
                    hits.append(f)
            out[target] = {"own": [str(f.relative_to(root)) for f in hits if plugins in f.parents],
                           "elsewhere": [str(f.relative_to(root)) for f in hits if plugins not in f.parents]}
    return out


def measure(root: Path = ROOT) -> dict:
    modules = module_files(root)
    graph = import_graph(modules)
    cyc = cycles(graph)
    priv = private_imports(modules)
    targets = {}
    for name, (path, backend) in sorted(_registered("register_target", modules).items()):
        backend_mods = {m for m in modules if backend and m == f"edgesdk.runtime.{backend}"}
        targets[name] = files_naming({name} | ({backend} if backend else set()), backend_mods, modules)
    by_path = {path: mod for mod, path in modules.items()}
    families = {name: files_naming({name}, {by_path[path]}, modules)
                for name, path in sorted(_registered("register_family", modules).items())}
    plugins = plugin_targets(root)
    funcs = longest_functions(modules)
    sdk_files = longest_files("sdk")
    return {
        "modules": len(modules),
        "import_cycles": len(cyc),
        "modules_in_cycles": sum(len(c) for c in cyc),
        "private_cross_imports": len(priv),
        "longest_function_lines": funcs[0][0],
        "longest_function": funcs[0][1],
        "longest_sdk_file_lines": sdk_files[0][0],
        "longest_sdk_file": sdk_files[0][1],
        "sdk_files_over_400": sum(1 for n, _ in longest_files("sdk", 1000) if n > 400),
        "files_naming_a_target_max": max(len(v) for v in targets.values()),
        "files_naming_a_target": {k: len(v) for k, v in targets.items()},
        "plugin_target_files": {k: f"{len(v['own'])} new, {len(v['elsewhere'])} existing"
                                for k, v in plugins.items()},
        "files_naming_a_family_max": max(len(v) for v in families.values()),
        "files_naming_a_family": {k: len(v) for k, v in families.items()},
        "_detail": {"cycles": cyc, "private": [f"{a} imports {b}.{n} (line {ln})" for a, b, n, ln in priv],
                    "functions": funcs, "sdk_files": sdk_files, "targets": targets, "families": families,
                    "plugin targets": {k: v["own"] + v["elsewhere"] for k, v in plugins.items()}},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--list", action="store_true", help="also list every cycle, private import and file")
    args = ap.parse_args(argv)
    m = measure()
    detail = m.pop("_detail")
    if args.json:
        if args.list:
            m["detail"] = detail
        print(json.dumps(m, indent=2))
        return 0
    print("| measure | value |\n|---|---|")
    for key, val in m.items():
        if isinstance(val, dict):
            val = ", ".join(f"{k} {v}" for k, v in val.items())
        print(f"| {key} | {val} |")
    if args.list:
        print("\ncycles:")
        for c in detail["cycles"]:
            print("  " + " <-> ".join(c))
        print("private cross-imports:")
        for p in detail["private"]:
            print("  " + p)
        print("longest functions:")
        for n, where in detail["functions"]:
            print(f"  {n:4d} {where}")
        for kind in ("targets", "families", "plugin targets"):
            print(f"files naming each of the {kind}:")
            for k, files in detail[kind].items():
                print(f"  {k}: {' '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
