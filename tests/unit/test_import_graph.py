"""No import cycles in reelbot, between modules or between its top-level packages.

Every import counts, those under ``TYPE_CHECKING`` and inside functions too: a cycle that only
the type checker or a lazy import walks is still two modules that cannot be read (or moved)
apart. Shared protocols go down into a leaf module (``worker/ports.py``, as arq's ``typing``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import grimp
import pytest


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("reelbot", cache_dir=None)


def _cycles(nodes: Iterable[str], edges: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges(succ)))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _module_cycle(graph: grimp.ImportGraph, component: list[str]) -> str:
    """One cycle through the component, each import with its line: ``a:12 -> b:7 -> a``."""
    members = set(component)
    first = component[0]
    second = min(m for m in graph.find_modules_directly_imported_by(first) if m in members)
    back = graph.find_shortest_chain(importer=second, imported=first) or ()
    chain = [first, *back]
    hops = []
    for importer, imported in itertools.pairwise(chain):
        lines = [
            d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)
        ]
        hops.append(f"{importer}:{','.join(map(str, lines))}")
    return " -> ".join([*hops, first])


def test_a_cycle_is_found_and_named() -> None:
    """The search itself: a three-module circle and a pair are found; a chain is not."""
    edges = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": [], "e": ["f"], "f": ["e"]}
    assert _cycles(edges, edges.__getitem__) == [["a", "b", "c"], ["e", "f"]]
    assert _cycles({"a": ["b"], "b": []}, {"a": ["b"], "b": []}.__getitem__) == []


def _module_cycles(graph: grimp.ImportGraph) -> list[str]:
    modules = {m for m in graph.modules if m == "reelbot" or m.startswith("reelbot.")}

    def imported_by(module: str) -> set[str]:
        return graph.find_modules_directly_imported_by(module) & modules

    return [_module_cycle(graph, c) for c in _cycles(modules, imported_by)]


def test_no_module_imports_itself_back(graph: grimp.ImportGraph) -> None:
    """No module of reelbot reaches itself through its imports."""
    cycles = _module_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_an_upward_import_is_reported_as_a_cycle() -> None:
    """The record store importing quotas again (as it once did) fails, naming both modules."""
    graph = grimp.build_graph("reelbot", cache_dir=None)
    graph.add_import(
        importer="reelbot.store.records",
        imported="reelbot.governance.quotas",
        line_number=18,
        line_contents="from reelbot.governance import quotas",
    )
    (cycle,) = _module_cycles(graph)
    assert "reelbot.store.records:18 -> " in cycle
    assert "reelbot.governance.quotas:" in cycle


def test_no_package_imports_itself_back(graph: grimp.ImportGraph) -> None:
    """reelbot's top-level packages and modules form layers: none reaches itself back."""
    tops = graph.find_children("reelbot")

    def imported_by(top: str) -> set[str]:
        return {
            other
            for other in tops
            if other != top
            and graph.direct_import_exists(importer=top, imported=other, as_packages=True)
        }

    cycles = _cycles(tops, imported_by)
    assert not cycles, "package cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
