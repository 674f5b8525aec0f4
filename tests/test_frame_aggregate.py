"""Frame trees: building, merging, diffing and windows, checked as properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flarebus.events import Stack, StackSample
from flarebus.samplers.aggregate import Frame, RollingWindow, WindowStore, build, diff, merge

names = st.sampled_from(["main", "serve", "db.query", "json.dumps", "hot", "a b (x.py:1)"])
stacks = st.lists(st.builds(Stack, st.lists(names, min_size=1, max_size=6),
                            st.integers(1, 20).map(float)), max_size=25)


def _through(stack_list: list[Stack], path: tuple[str, ...]) -> float:
    return sum(s.weight for s in stack_list if tuple(s.frames[: len(path)]) == path)


@settings(max_examples=150, deadline=None)
@given(stacks, stacks, stacks)
def test_merge_is_associative(a: list[Stack], b: list[Stack], c: list[Stack]) -> None:
    """merge(merge(a, b), c) equals merge(a, merge(b, c))."""
    ta, tb, tc = build(a), build(b), build(c)
    assert merge(merge(ta, tb), tc) == merge(ta, merge(tb, tc))


@settings(max_examples=150, deadline=None)
@given(stacks, stacks)
def test_merge_equals_building_from_all_samples(a: list[Stack], b: list[Stack]) -> None:
    """Merging two trees gives the tree of both sample sets."""
    assert merge(build(a), build(b)) == build(a + b)


@settings(max_examples=150, deadline=None)
@given(stacks)
def test_inclusive_value_is_the_weight_through_the_node(stack_list: list[Stack]) -> None:
    """Every node's value is the total weight of the samples whose stack passes through it."""
    tree = build(stack_list)
    assert tree.value == sum(s.weight for s in stack_list)
    todo: list[tuple[tuple[str, ...], Frame]] = [((), tree)]
    while todo:
        path, node = todo.pop()
        assert node.value == _through(stack_list, path)
        exact = sum(s.weight for s in stack_list if tuple(s.frames) == path) if path else 0
        assert node.self_value == exact
        todo.extend(((*path, c.name), c) for c in node.children.values())


@settings(max_examples=150, deadline=None)
@given(stacks)
def test_diff_with_itself_is_empty(stack_list: list[Stack]) -> None:
    """A tree diffed with itself is a lone root of value 0."""
    tree = build(stack_list)
    empty = diff(tree, tree)
    assert empty.value == 0
    assert empty.children == {}


@settings(max_examples=100, deadline=None)
@given(stacks, stacks)
def test_diff_recovers_what_was_added(a: list[Stack], b: list[Stack]) -> None:
    """diff(a, a + b) is exactly the tree of b."""
    assert diff(build(a), build(a + b)) == build(b)


def test_diff_normalized_compares_shares() -> None:
    """A normalized diff of a window that is just longer (same shares) is empty."""
    short = build([Stack(["main", "hot"], 3), Stack(["main", "cold"], 1)])
    long = build([Stack(["main", "hot"], 30), Stack(["main", "cold"], 10)])
    assert diff(short, long, normalize=True).children == {}
    hotter = build([Stack(["main", "hot"], 35), Stack(["main", "cold"], 5)])
    changed = diff(long, hotter, normalize=True)
    assert changed.children["main"].children["hot"].value == 5


def test_paths_give_self_weights_and_rebuild_the_tree() -> None:
    """paths() yields each stack with its self weight; adding them back gives the same tree."""
    tree = build([Stack(["main"], 2), Stack(["main", "hot"], 5), Stack(["x"], 1)])
    assert sorted(tree.paths()) == [(("main",), 2.0), (("main", "hot"), 5.0), (("x",), 1.0)]
    again = Frame()
    for path, weight in tree.paths():
        again.add(path, weight)
    assert again == tree


def test_rolling_window_keeps_only_the_last_span() -> None:
    """Samples older than the span fall out; a shorter window can be asked for."""
    window = RollingWindow(10)
    for t in range(0, 30, 2):
        window.add(StackSample("api", [Stack(["main", f"t{t}"])], float(t)), float(t))
    assert len(window) == 5  # ts 20..28: within (28 - 10, 28]
    assert set(window.tree().children["main"].children) == {f"t{t}" for t in range(20, 30, 2)}
    assert set(window.tree(4).children["main"].children) == {"t26", "t28"}


def test_rolling_window_accepts_out_of_order_samples() -> None:
    """A late sample lands in time order, so windows by time stay exact."""
    window = RollingWindow(100)
    for t in (1.0, 5.0, 3.0):
        window.add(StackSample("api", [Stack([f"t{t:g}"])], t), t)
    assert [s.ts for s in window.samples()] == [1.0, 3.0, 5.0]
    assert set(window.tree(2.5).children) == {"t3", "t5"}


def test_window_store_keeps_sources_apart() -> None:
    """Each source has its own window."""
    store = WindowStore(60)
    store.add(StackSample("api", [Stack(["a"])], 1.0), now=1.0)
    store.add(StackSample("db", [Stack(["b"])], None), now=2.0)
    assert set(store.get("api").tree().children) == {"a"}  # type: ignore[union-attr]
    assert set(store.get("db").tree().children) == {"b"}  # type: ignore[union-attr]
    assert store.get("nope") is None
