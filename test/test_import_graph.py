"""
The import graph of the project's own modules, read from the source: no cycles, and the runtime stays apart.

Every ``import`` statement counts, also those inside functions (the lazy imports a run-time check never executes),
so a circle closed by a function-level import is found here. What a module loads at run time, through third-party
packages too, is test_import_no_torch.py's part.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {'mesc3d_ros': REPO / 'mesc3d_ros', 'mesc3d_training': REPO / 'training'}
"""Import name -> source folder (setup.py installs ``training/`` as ``mesc3d_training``)."""


def module_files() -> dict[str, Path]:
    """Map every module name of the project to its file (a package to its ``__init__.py``)."""
    modules = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob('*.py')):
            parts = path.relative_to(root).with_suffix('').parts
            if parts[-1] == '__init__':
                parts = parts[:-1]
            modules['.'.join((package, *parts))] = path
    return modules


def imported_names(path: Path, module: str) -> set[str]:
    """Return the absolute dotted names that ``module``'s file imports anywhere (``from a import b`` gives a.b)."""
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # relative: from the module's package, one level up per extra dot
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f'{base}.{alias.name}' for alias in node.names)
    return names


def project_graph() -> dict[str, set[str]]:
    """Map each project module to the project modules it imports (a name that is no module counts as its parent)."""
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            while name and name not in modules:
                name = name.rpartition('.')[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(start: str) -> None:
        # Iterative depth-first search: (module, iterator over its targets).
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_circle_closed_inside_a_function(tmp_path):
    # Guards the checks below: a finder that misses function-level imports would pass them vacuously.
    first, second = tmp_path / 'first.py', tmp_path / 'second.py'
    first.write_text('import pkg.second\n')
    second.write_text('def later():\n    from pkg import first\n')
    graph = {'pkg.first': {'pkg.second'}, 'pkg.second': set(), 'pkg.alone': set()}
    assert imported_names(second, 'pkg.second') == {'pkg', 'pkg.first'}
    graph['pkg.second'] = {'pkg.first'}
    assert cycles(graph) == [['pkg.first', 'pkg.second']]


def test_the_graph_holds_both_packages():
    graph = project_graph()
    assert {'mesc3d_ros.pipeline', 'mesc3d_training.cli', 'mesc3d_training.demo.publisher'} <= set(graph)
    assert 'mesc3d_ros.pipeline' in graph['mesc3d_ros.reconstruct_node']


def test_no_import_cycles():
    assert cycles(project_graph()) == []


def test_the_runtime_never_imports_training_or_torch_even_lazily():
    modules = module_files()
    offending = {}
    for module, path in modules.items():
        if module.split('.')[0] != 'mesc3d_ros':
            continue
        roots = {name.split('.')[0] for name in imported_names(path, module)}
        bad = roots & {'mesc3d_training', 'torch', 'torchvision'}
        if bad:
            offending[module] = sorted(bad)
    assert offending == {}
