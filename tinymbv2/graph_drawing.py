"""Draw the graph autograd recorded for a tensor: values and operations, arrows forward.

``loss = ((a * b) + c).relu().sum()`` records one node per operation (a
[Function][tinymbv2.autograd.Function], its context and its inputs, in ``tensor._node``).
[trace][tinymbv2.graph_drawing.trace] walks those nodes from the output back to the leaves,
as ``backward`` does, and returns the picture's contents: one box per tensor (its name,
value or shape, and its gradient once ``backward`` has run) and one per operation, with an
arrow from every input to its operation and from the operation to its output.
[draw_graph][tinymbv2.graph_drawing.draw_graph] lays the boxes out in columns, inputs on the
left and the output on the right, and draws them with matplotlib (no Graphviz needed)::

    a = Tensor(np.array([2.0]), requires_grad=True)
    ...
    loss.backward(retain_graph=True)      # keep the graph: backward frees it otherwise
    draw_graph(loss, names={"a": a, "b": b, "c": c, "L": loss})

``backward`` frees the graph as it goes (PyTorch does too), so a graph drawn after
``backward`` must have been kept with ``retain_graph=True``. Only leaves keep a gradient.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from .autograd import Tensor

VALUE_STYLE = dict(boxstyle="round,pad=0.4", facecolor="#e8f0fb", edgecolor="#3a6ea5")
CONSTANT_STYLE = dict(boxstyle="round,pad=0.4", facecolor="#f2f2f2", edgecolor="#888888")
OP_STYLE = dict(boxstyle="circle,pad=0.3", facecolor="#fdf1d8", edgecolor="#c08a1e")


@dataclass(frozen=True)
class GraphNode:
    """One box of the picture.

    Attributes:
        key: ``"v0"``, ``"v1"``, ... for tensors, ``"f0"``, ... for operations, numbered in
            forward order (every box after its inputs).
        kind: ``"value"`` (a tensor that needs a gradient), ``"constant"`` (a tensor that
            does not) or ``"op"``.
        label: the text in the box.
        column: 0 for the leftmost column; inputs sit left of their operation.
        row: the vertical position (the output at 0, larger is higher).
    """

    key: str
    kind: str
    label: str
    column: int
    row: float


@dataclass(frozen=True)
class Graph:
    """What [trace][tinymbv2.graph_drawing.trace] found: the boxes, and the arrows as
    ``(from_key, to_key)`` pairs in the direction of the forward pass."""

    nodes: list[GraphNode]
    edges: list[tuple[str, str]]

    def node(self, key: str) -> GraphNode:
        """The box with this ``key``.

        Args:
            key: ``"v3"``, ``"f0"``, ...

        Returns:
            The [GraphNode][tinymbv2.graph_drawing.GraphNode].
        """
        return next(n for n in self.nodes if n.key == key)


def _describe(array) -> str:
    """A number as itself, a small array as its values, a larger one as its shape."""
    array = np.asarray(array, dtype=np.float64) + 0.0  # + 0.0 turns -0 into 0
    if array.size == 1:
        return f"{array.item():.4g}"
    if array.size <= 4:
        return "[" + ", ".join(f"{v:.3g}" for v in array.reshape(-1)) + "]"
    return f"shape {tuple(array.shape)}"


def _value_label(tensor: Tensor, name: str | None) -> str:
    lines = [f"{name} = {_describe(tensor.numpy())}" if name else _describe(tensor.numpy())]
    if tensor.grad is not None:
        lines.append(f"grad {_describe(tensor.grad)}")
    return "\n".join(lines)


def _op_label(node) -> str:
    """The Function's name, with any constant number it was given (``Pow`` 2 -> "pow 2")."""
    constants = [f"{a:g}" for a in node.inputs if isinstance(a, numbers.Number) and not isinstance(a, bool)]
    return " ".join([node.function.__name__.lower(), *constants])


def trace(root: Tensor, names: dict[str, Tensor] | None = None) -> Graph:
    """The boxes and arrows of the graph that produced ``root``, laid out in columns.

    The walk is the one ``backward`` makes (an explicit stack, so a long chain of
    operations cannot exhaust Python's recursion limit; each tensor once, however many
    operations use it), except that it also shows the inputs that need no gradient
    (constants).

    Args:
        root: the tensor whose history is drawn, usually the loss.
        names: optional ``{"a": a, ...}``: a tensor found in it is labelled with its name.

    Returns:
        The [Graph][tinymbv2.graph_drawing.Graph]. Keys follow the forward order: ``v0`` is
        the first input, the root comes last. A value's label is ``"name = value"`` (a
        larger array gives its shape), plus a line ``"grad ..."`` where a gradient is
        stored; an operation's label is its Function's name in lower case.

    Raises:
        TypeError: ``root`` is not a Tensor.
        RuntimeError: ``backward`` has already freed the graph (call it with
            ``retain_graph=True`` to draw the graph afterwards).
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"trace: expected a Tensor, got {type(root).__name__}")
    name_of = {id(t): n for n, t in (names or {}).items()}
    tensors = _forward_order(root)
    key = {id(t): f"v{i}" for i, t in enumerate(tensors)}
    nodes, edges, column, ops = [], [], {}, 0
    for tensor in tensors:  # every tensor after its inputs: the columns in one pass
        value, node = key[id(tensor)], tensor._node
        column[value] = 0
        if node is not None:
            op, ops = f"f{ops}", ops + 1
            inputs = [key[id(a)] for a in node.inputs if isinstance(a, Tensor)]
            nodes.append((op, "op", _op_label(node)))
            edges += [(v, op) for v in inputs] + [(op, value)]
            column[op] = 1 + max((column[v] for v in inputs), default=-1)
            column[value] = column[op] + 1
        kind = "value" if tensor.requires_grad else "constant"
        nodes.append((value, kind, _value_label(tensor, name_of.get(id(tensor)))))
    _move_leaves_right(column, edges)
    rows = _rows(column, edges, order=[n[0] for n in nodes])
    return Graph([GraphNode(k, kind, label, column[k], rows[k]) for k, kind, label in nodes], edges)


def _forward_order(root: Tensor) -> list[Tensor]:
    """Every tensor in ``root``'s history, each after its inputs, first inputs first."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        tensor, inputs_done = stack.pop()
        if inputs_done:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        node = tensor._node
        if node is not None:
            if node.ctx.freed:
                raise RuntimeError(
                    "trace: backward() has freed this graph; call .backward(retain_graph=True) "
                    "to keep it for drawing")
            stack.extend((a, False) for a in reversed(node.inputs) if isinstance(a, Tensor))
    return order


def _move_leaves_right(column: dict[str, int], edges: list[tuple[str, str]]) -> None:
    """Put each leaf one column left of its leftmost user, next to where it is used, rather
    than all leaves in column 0."""
    produced = {target for source, target in edges if source.startswith("f")}
    first_use: dict[str, int] = {}
    for source, target in edges:
        if source.startswith("v") and source not in produced:
            first_use[source] = min(first_use.get(source, column[target]), column[target])
    for leaf, user_column in first_use.items():
        column[leaf] = user_column - 1


def _rows(column: dict[str, int], edges: list[tuple[str, str]], order: list[str]) -> dict[str, float]:
    """Rows, column by column from the output back (as backward walks): each box level with
    the boxes that use it, an operation's inputs spread above and below it in their order,
    boxes of one column at least one row apart."""
    users: dict[str, list[str]] = {k: [] for k in column}
    inputs: dict[str, list[str]] = {k: [] for k in column}
    for source, target in edges:
        users[source].append(target)
        inputs[target].append(source)
    by_column: dict[int, list[str]] = {}
    for k in order:
        by_column.setdefault(column[k], []).append(k)
    rows: dict[str, float] = {}
    for c in sorted(by_column, reverse=True):
        wanted = {}
        for k in by_column[c]:
            spots = [rows[u] + (len(inputs[u]) - 1) / 2 - inputs[u].index(k) for u in users[k]]
            wanted[k] = sum(spots) / len(spots) if spots else 0.0
        previous = float("inf")
        for k in sorted(wanted, key=lambda k: -wanted[k]):  # top down; stable: forward order
            rows[k] = previous = min(wanted[k], previous - 1)
    return rows


def draw_graph(root: Tensor, ax=None, names: dict[str, Tensor] | None = None) -> Graph:
    """Draw the graph that produced ``root`` on ``ax`` (a new figure if None).

    Tensors are rounded boxes (blue if they need a gradient, grey if constant), operations
    circles; arrows run in the direction of the forward pass, from inputs (left) to the
    output (right). The backward pass walks the same arrows from right to left.

    Args:
        root: the tensor whose history is drawn, usually the loss.
        ax: a matplotlib Axes; None makes a figure sized to the graph.
        names: optional ``{"a": a, ...}`` labelling the tensors found in it.

    Returns:
        The [Graph][tinymbv2.graph_drawing.Graph] that was drawn (see
        [trace][tinymbv2.graph_drawing.trace]).
    """
    graph = trace(root, names)
    width = max(n.column for n in graph.nodes) + 1
    height = max(n.row for n in graph.nodes) - min(n.row for n in graph.nodes) + 1
    if ax is None:
        _, ax = plt.subplots(figsize=(1.4 * width + 1, 0.9 * height + 1))
    style = {"value": VALUE_STYLE, "constant": CONSTANT_STYLE, "op": OP_STYLE}
    texts = {}
    for n in graph.nodes:
        texts[n.key] = ax.text(n.column, n.row, n.label, ha="center", va="center", fontsize=9,
                               family="monospace", bbox=style[n.kind], zorder=3)
    for source, target in graph.edges:
        # from box edge to box edge: the arrow is clipped to the boxes' patches, which
        # matplotlib positions when it draws the texts, so the arrows are drawn after them
        ax.annotate("", xy=(graph.node(target).column, graph.node(target).row),
                    xytext=(graph.node(source).column, graph.node(source).row),
                    arrowprops=dict(arrowstyle="-|>", color="#555555", shrinkA=0, shrinkB=0,
                                    patchA=texts[source].get_bbox_patch(),
                                    patchB=texts[target].get_bbox_patch()),
                    zorder=4)
    ys = [n.row for n in graph.nodes]
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.axis("off")
    return graph
