"""tinymbv2.graph_drawing: the boxes and arrows drawn for a known expression.

For ``L = ((a * b) + c).relu().sum()`` with a = [2, -1], b = [3, 4], c = [-1, 0.5]:
a*b = [6, -4], + c = [5, -3.5], relu = [5, 0], L = 5. Backward: the relu passes only
the first component, so dL/da = b * [1, 0] = [3, 0], dL/db = a * [1, 0] = [2, 0],
dL/dc = [1, 0].
"""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from tinymbv2 import Tensor  # noqa: E402
from tinymbv2.graph_drawing import draw_graph, trace  # noqa: E402


def leaves():
    return (Tensor(np.array([2.0, -1.0]), requires_grad=True), Tensor(np.array([3.0, 4.0]), requires_grad=True),
            Tensor(np.array([-1.0, 0.5]), requires_grad=True))


def test_trace_of_a_known_expression_before_and_after_backward():
    a, b, c = leaves()
    loss = ((a * b) + c).relu().sum()
    names = {"a": a, "b": b, "c": c, "L": loss}
    before = trace(loss, names)
    labels = {n.key: n.label for n in before.nodes}
    assert labels == {"v0": "a = [2, -1]", "v1": "b = [3, 4]", "f0": "mul", "v2": "[6, -4]",
                      "v3": "c = [-1, 0.5]", "f1": "add", "v4": "[5, -3.5]", "f2": "relu",
                      "v5": "[5, 0]", "f3": "sum", "v6": "L = 5"}
    assert before.edges == [("v0", "f0"), ("v1", "f0"), ("f0", "v2"), ("v2", "f1"), ("v3", "f1"),
                            ("f1", "v4"), ("v4", "f2"), ("f2", "v5"), ("v5", "f3"), ("f3", "v6")]
    assert {n.key: n.kind for n in before.nodes if n.kind == "op"} == {f"f{i}": "op" for i in range(4)}
    # inputs left of their op, c right beside the add that uses it, the loss rightmost
    columns = {n.key: n.column for n in before.nodes}
    assert columns == {"v0": 0, "v1": 0, "f0": 1, "v2": 2, "v3": 2, "f1": 3, "v4": 4, "f2": 5,
                       "v5": 6, "f3": 7, "v6": 8}
    assert all(columns[s] < columns[t] for s, t in before.edges)

    loss.backward(retain_graph=True)
    after = {n.key: n.label for n in trace(loss, names).nodes}
    assert after["v0"] == "a = [2, -1]\ngrad [3, 0]"
    assert after["v1"] == "b = [3, 4]\ngrad [2, 0]"
    assert after["v3"] == "c = [-1, 0.5]\ngrad [1, 0]"
    assert after["v4"] == "[5, -3.5]"  # an intermediate keeps no gradient (as in PyTorch)


def test_draw_graph_draws_one_box_per_node_and_one_arrow_per_edge():
    a, b, c = leaves()
    loss = ((a * b) + c).relu().sum()
    loss.backward(retain_graph=True)
    fig, ax = plt.subplots()
    graph = draw_graph(loss, ax=ax, names={"a": a, "b": b, "c": c, "L": loss})
    fig.canvas.draw()  # lays out the boxes, so the arrows are clipped to them
    arrows = [child for child in ax.get_children() if isinstance(child, Annotation)]
    boxes = [t for t in ax.texts if not isinstance(t, Annotation)]
    assert sorted(t.get_text() for t in boxes) == sorted(n.label for n in graph.nodes)
    assert len(arrows) == len(graph.edges) == 10
    for arrow, (source, target) in zip(arrows, graph.edges):
        start, end = arrow.xyann, arrow.xy  # arrows point forward: from the input to its user
        assert start == (graph.node(source).column, graph.node(source).row)
        assert end == (graph.node(target).column, graph.node(target).row)
        assert start[0] < end[0]
    by_label = {t.get_text(): t for t in boxes}
    assert by_label["mul"].get_bbox_patch().get_boxstyle().__class__.__name__ == "Circle"
    plt.close(fig)


def test_a_tensor_used_twice_is_one_box_with_two_arrows_and_constants_are_marked():
    x = Tensor(np.array([3.0]), requires_grad=True)
    y = x * x * 2.0
    graph = trace(y, {"x": x})
    assert [n.label for n in graph.nodes] == ["x = 3", "mul", "9", "2", "mul", "18"]
    assert graph.edges.count(("v0", "f0")) == 2
    assert graph.node("v2").kind == "constant" and graph.node("v0").kind == "value"


def test_a_freed_graph_or_a_non_tensor_gets_a_clear_error():
    a, b, c = leaves()
    loss = (a * b).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        trace(loss)
    with pytest.raises(TypeError, match="expected a Tensor, got ndarray"):
        draw_graph(np.zeros(3))


def test_a_long_chain_is_walked_without_recursion():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(3000):  # deeper than Python's default recursion limit of 1000
        y = y + 1.0
    graph = trace(y)
    assert len(graph.nodes) == 1 + 3000 * 3  # x, and per add: the constant, the op, the sum
    assert graph.node("v0").column == 0 and max(n.column for n in graph.nodes) == 2 * 3000
