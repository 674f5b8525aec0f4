"""The flamegraph ``Frame`` tree, the type stacks aggregate into and exporters receive.

A Frame holds its *inclusive* value (the weight of every sample whose stack
passes through it); self weight is derived (value minus the children's), never
stored twice, so merging and diffing only ever add inclusive values and the
tree cannot disagree with itself. Building, merging and windowing trees is in
``flarebus.samplers.aggregate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

ROOT_NAME = "all"


class Frame:
    """One node of a flamegraph: a frame name, its inclusive value and its children by name."""

    __slots__ = ("children", "name", "value")

    def __init__(self, name: str = ROOT_NAME, value: float = 0.0,
                 children: Iterable[Frame] = ()) -> None:
        self.name = name
        self.value = value
        self.children: dict[str, Frame] = {child.name: child for child in children}

    @property
    def self_value(self) -> float:
        """Weight of the samples whose stack ends here (derived, never stored)."""
        return self.value - sum(child.value for child in self.children.values())

    def child(self, name: str) -> Frame:
        """The child called ``name``, created (with value 0) when missing."""
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = Frame(name)
        return node

    def add(self, frames: Sequence[str], weight: float = 1.0) -> None:
        """Fold one stack (root frame first) into this tree, this node being the root."""
        self.value += weight
        children = self.children
        for name in frames:
            node = children.get(name)
            if node is None:
                node = children[name] = Frame(name)
            node.value += weight
            children = node.children

    def paths(self) -> Iterator[tuple[tuple[str, ...], float]]:
        """Every stack (path below this node) with its non-zero self weight, depth first."""
        todo: list[tuple[tuple[str, ...], Frame]] = [((), self)]
        while todo:
            path, node = todo.pop()
            own = node.self_value
            if path and own != 0:
                yield path, own
            for child in reversed(list(node.children.values())):
                todo.append(((*path, child.name), child))

    def walk(self) -> Iterator[tuple[int, Frame]]:
        """Every node with its depth (this node is depth 0), parents before children."""
        todo: list[tuple[int, Frame]] = [(0, self)]
        while todo:
            depth, node = todo.pop()
            yield depth, node
            todo.extend((depth + 1, c) for c in reversed(list(node.children.values())))

    def find(self, name: str) -> list[Frame]:
        """Every node called ``name`` anywhere in the tree."""
        return [node for _, node in self.walk() if node.name == name]

    def depth(self) -> int:
        return max(d for d, _ in self.walk())

    def copy(self) -> Frame:
        return Frame(self.name, self.value, (c.copy() for c in self.children.values()))

    def sorted(self) -> Frame:
        """A copy with children in name order (what exporters lay out, for stable output)."""
        return Frame(self.name, self.value,
                     (self.children[k].sorted() for k in sorted(self.children)))

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value,
                "children": [c.to_dict() for c in self.children.values()]}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.name == other.name and self.value == other.value
                and self.children == other.children)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Frame({self.name!r}, {self.value!r}, {len(self.children)} children)"
