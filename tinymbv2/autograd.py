r"""A small reverse-mode automatic differentiation engine.

A [Tensor][tinymbv2.autograd.Tensor] wraps an array (NumPy, or CuPy on the GPU). Every
operation on tensors that need gradients records a node: the
[Function][tinymbv2.autograd.Function] that made the output, a context holding what its
backward pass needs, and the input tensors. ``loss.backward()`` then walks those nodes
from the output back to the leaves in reverse topological order, and each node turns the
gradient of its output into gradients of its inputs (the chain rule):

$$
\frac{\partial L}{\partial x} = \text{backward}(\text{ctx}, \frac{\partial L}{\partial y})
$$

Gradients of a tensor used in several places are summed, which is the
multivariate chain rule. The walk is iterative, so a chain of 100,000 ops does
not hit Python's recursion limit.

Two hooks let data parallelism (``tinymbv2.distributed``) work while the walk runs, as
PyTorch's do: ``leaf.register_post_accumulate_grad_hook(fn)`` calls ``fn(leaf)`` once the
leaf's gradient is complete, and ``queue_callback(fn)`` runs ``fn()`` when the walk ends.

The ops themselves (with their derivatives, micrograd style: backward right
beside forward) live in ``tinymbv2.functional``; this file holds the engine.
Tensor's arithmetic operators and methods (``a + b``, ``x @ w``, ``x[i]``,
``x.sum()``, ...) call those ops, so they are defined there too
([tinymbv2.functional.tensor_methods][]) and installed on Tensor when
the package starts (``tinymbv2/__init__.py``), as DeZero's ``setup_variable()``
does: the engine never imports the ops, which import the engine.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from .backend import get_array_module, to_device

_grad_enabled = True
_profiler = None  # set by tinymbv2.profiler.profile(): records time per Function
_callbacks = None  # while a backward runs: the functions queue_callback() queued for its end


@contextlib.contextmanager
def no_grad():
    """Inside this block operations build no graph (inference, optimizer steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def queue_callback(fn) -> None:
    """Run ``fn()`` once the backward pass now running has walked the whole graph.

    PyTorch's ``Variable._execution_engine.queue_callback``: a hook that fires during the
    walk (e.g. [Tensor.register_post_accumulate_grad_hook][tinymbv2.autograd.Tensor.register_post_accumulate_grad_hook])
    queues work for its end. ``DistributedDataParallel`` waits there for its last
    all-reduces. Callbacks run in the order they were queued; one that raises stops the rest,
    and the error comes out of ``backward()``.

    Args:
        fn: A function of no arguments.

    Raises:
        RuntimeError: No backward pass is running.
    """
    if _callbacks is None:
        raise RuntimeError("queue_callback: no backward pass is running (call it from a hook)")
    _callbacks.append(fn)


class _HookHandle:
    """What ``register_post_accumulate_grad_hook`` returns: ``remove()`` takes the hook off."""

    def __init__(self, hooks: list, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self) -> None:
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def _as_array(data, dtype=None):
    """Turn tensor-like input into an array.

    Python numbers and lists of floats become float32 (like ``torch.tensor``);
    arrays keep their dtype, so float64 stays float64.
    """
    if isinstance(data, Tensor):
        data = data.data
    xp = get_array_module(data)
    if dtype is not None:
        return xp.asarray(data, dtype=dtype)
    if isinstance(data, (bool, int, float, list, tuple)) and not isinstance(data, np.generic):
        arr = np.asarray(data)
        return arr.astype(np.float32) if arr.dtype == np.float64 else arr
    return xp.asarray(data)


class Context:
    """What a Function's forward keeps for its backward (``ctx`` in PyTorch)."""

    def __init__(self):
        self.saved = ()
        self.freed = False
        self.needs_input_grad = ()

    def save_for_backward(self, *arrays) -> None:
        """Keep arrays for the backward pass (read back as ``saved_tensors``).

        Args:
            *arrays: The arrays the backward needs, in the order it reads them.
        """
        self.saved = arrays

    @property
    def saved_tensors(self):
        if self.freed:
            raise RuntimeError(
                "backward: trying to backward through the graph a second time; the "
                "saved arrays were freed after the first backward. Call "
                ".backward(retain_graph=True) the first time if you need two."
            )
        return self.saved

    def free(self) -> None:
        self.saved = ()
        self.freed = True
        for name in list(vars(self)):
            if name not in ("saved", "freed", "needs_input_grad"):
                delattr(self, name)


class Function:
    """Base class of differentiable operations.

    Subclasses define two static methods working on raw arrays,
    [forward][tinymbv2.autograd.Function.forward] and
    [backward][tinymbv2.autograd.Function.backward], and are called through
    [apply][tinymbv2.autograd.Function.apply], which unwraps tensors, runs forward and, when
    any input requires a gradient, records the node in the graph.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        """Compute the output array from the input arrays (a subclass defines it).

        Args:
            ctx: The [Context][tinymbv2.autograd.Context] to keep what backward needs in.
            *args: The inputs, Tensors unwrapped to their arrays (other values as given).
            **kwargs: The op's options (stride, eps, ...).

        Returns:
            The output array.
        """
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        r"""Map the output's gradient to one gradient per positional input (a subclass defines it).

        Args:
            ctx: The [Context][tinymbv2.autograd.Context] forward filled.
            grad: $\partial L / \partial y$, the gradient of the loss with respect to the output
                (an array of the output's shape).

        Returns:
            One gradient per positional input of forward, an array of that input's shape (a
            tuple when there are several), None for inputs that are not tensors or need no
            gradient (``ctx.needs_input_grad`` says which).
        """
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs) -> "Tensor":
        """Run the op on Tensors and, when any input requires a gradient, record it in the graph.

        Args:
            *args: The inputs; Tensors are unwrapped to their arrays for forward.
            **kwargs: The op's options, passed to forward as they are.

        Returns:
            The output Tensor (requiring a gradient when an input does and grad mode is on).
        """
        ctx = Context()
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        if _profiler is None:
            out = Tensor(cls.forward(ctx, *raw, **kwargs))
        else:
            start = time.perf_counter()
            out = Tensor(cls.forward(ctx, *raw, **kwargs))
            _profiler.record(cls.__name__, "forward", time.perf_counter() - start)
        if _grad_enabled and any(ctx.needs_input_grad):
            out.requires_grad = True
            out._node = Node(cls, ctx, args)
        return out


class Node:
    """One recorded operation: the function, its context and its inputs.

    Args:
        function: The Function subclass that made the output.
        ctx: Its [Context][tinymbv2.autograd.Context].
        inputs: The positional inputs of apply, Tensors and other values.
    """

    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function, ctx, inputs):
        self.function = function
        self.ctx = ctx
        self.inputs = inputs

    def __repr__(self):
        return f"<{self.function.__name__}>"


class Tensor:
    """An array with an optional gradient and a link to the op that made it.

    Python numbers and lists become float32, arrays keep their dtype (float64 stays
    float64). Only floating tensors can require gradients.

    Arithmetic (``+ - * / ** @``, ``x[i]``, ``.sum()``, ``.reshape()``, ...) is
    installed at package start-up from [tinymbv2.functional.tensor_methods][]
    (each calls the differentiable op of the same name; ``TENSOR_METHODS`` there lists
    them, where an editor's go-to-definition cannot follow ``x + y``). Comparisons are
    here: they give plain boolean arrays and have no gradient.

    Args:
        data: An array (NumPy or CuPy, used as it is), a number or a (nested) list.
        requires_grad: Whether ``backward`` computes a gradient for it.
        dtype: Cast to this dtype; None: as described above.
    """

    __array_priority__ = 100  # so that ndarray + Tensor calls Tensor.__radd__
    _post_accumulate_grad_hooks = ()  # a leaf's own list once a hook is registered

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._node: Node | None = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- basic properties ---------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def device(self) -> str:
        return "cpu" if get_array_module(self.data) is np else "cuda"

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self):
        return len(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Set whether this tensor requires a gradient, in place; returns self.

        Args:
            flag: True to require one.

        Raises:
            TypeError: The tensor is not floating and ``flag`` is True.
        """
        if flag and self.data.dtype.kind != "f":
            raise TypeError(
                f"Tensor.requires_grad_: only floating tensors can require gradients, "
                f"got dtype {self.data.dtype}"
            )
        self.requires_grad = flag
        return self

    def register_post_accumulate_grad_hook(self, hook) -> _HookHandle:
        """Call ``hook(self)`` each time a backward pass has accumulated this leaf's gradient.

        PyTorch's hook of the same name. In one backward pass a leaf's gradient is
        accumulated once (the engine sums the gradients from all its uses first), after the
        backward of every op that used it, so the hook sees ``self.grad`` complete for this
        pass (with what earlier passes left in it). ``DistributedDataParallel`` uses it to
        start a bucket's all-reduce while the rest of the backward pass still runs.

        Args:
            hook: A function of the tensor; what it returns is ignored.

        Returns:
            A handle whose ``remove()`` unregisters the hook.

        Raises:
            RuntimeError: The tensor is not a leaf that requires grad.
        """
        if not (self.is_leaf and self.requires_grad):
            raise RuntimeError(
                "register_post_accumulate_grad_hook: expected a leaf tensor that requires grad "
                f"(a parameter), got one with is_leaf={self.is_leaf}, "
                f"requires_grad={self.requires_grad}"
            )
        if not callable(hook):
            raise TypeError(
                f"register_post_accumulate_grad_hook: expected a callable, got {type(hook).__name__}"
            )
        if "_post_accumulate_grad_hooks" not in self.__dict__:
            self._post_accumulate_grad_hooks = []
        self._post_accumulate_grad_hooks.append(hook)
        return _HookHandle(self._post_accumulate_grad_hooks, hook)

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied to the host if it lives on the GPU)."""
        if get_array_module(self.data) is np:
            return self.data
        return self.data.get()

    def item(self):
        return self.data.item()

    def detach(self) -> "Tensor":
        """A new leaf sharing the data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device: str) -> "Tensor":
        """This tensor's data on ``device``, as a new leaf.

        ``requires_grad`` is kept; ``grad`` is not copied. Already there: ``self``
        itself (as PyTorch). The move is not recorded in the graph, so moving a
        non-leaf that requires grad is an error: move the inputs and parameters
        (``model.to("cuda")``) before computing.

        Args:
            device: ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy on the current GPU).

        Returns:
            The tensor on ``device``.

        Raises:
            RuntimeError: The tensor is a non-leaf that requires grad.
        """
        if device == self.device:
            return self
        if self._node is not None and self.requires_grad:
            raise RuntimeError(
                "Tensor.to: cannot move a non-leaf tensor that requires grad (the move is "
                "not part of the graph); move the inputs/parameters before computing, or "
                ".detach() first"
            )
        data = to_device(self.data, device, "Tensor.to")
        return Tensor(data, requires_grad=self.requires_grad)

    def cpu(self) -> "Tensor":
        """``to("cpu")``: the data as a NumPy array."""
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        """``to("cuda")``: the data as a CuPy array on the current GPU."""
        return self.to("cuda")

    # -- comparisons: plain boolean arrays, no gradient ----------------------
    def __eq__(self, other):
        return self.data == _raw(other)

    def __ne__(self, other):
        return self.data != _raw(other)

    def __lt__(self, other):
        return self.data < _raw(other)

    def __le__(self, other):
        return self.data <= _raw(other)

    def __gt__(self, other):
        return self.data > _raw(other)

    def __ge__(self, other):
        return self.data >= _raw(other)

    __hash__ = object.__hash__  # defining __eq__ would otherwise make tensors unhashable

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.numpy(), precision=4, separator=", ", threshold=20)
        return f"Tensor({body}, dtype={self.dtype}{grad})"

    # -- the reverse walk ---------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        r"""Accumulate $\partial\,\text{self} / \partial\,\text{leaf}$ into ``leaf.grad``.

        Every leaf that requires a gradient gets one (added to what it holds).


        Args:
            grad: The upstream gradient $\partial L / \partial\,\text{self}$, of this tensor's
                shape; it may be omitted only for a tensor with one element (then it is 1).
            retain_graph: Keep the saved arrays, so that the graph can be walked again.

        Raises:
            RuntimeError: The tensor does not require grad, ``grad`` is omitted for a tensor of
                several elements or has another shape, or the graph was already walked and freed.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no graph "
                "(was it made under no_grad, or from inputs with requires_grad=False?)"
            )
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicit only for a single-element tensor, "
                    f"got shape {self.shape}; pass grad= of that shape"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = _as_array(grad, self.data.dtype)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward: grad must have the tensor's shape {self.shape}, got {grad.shape}"
                )

        global _callbacks
        outer, _callbacks = _callbacks, []
        try:
            _walk(self, grad, retain_graph)
            while _callbacks:
                _callbacks.pop(0)()
        finally:
            _callbacks = outer


def _walk(root: Tensor, grad, retain_graph: bool) -> None:
    """The reverse walk of ``Tensor.backward`` from ``root`` with upstream gradient ``grad``."""
    grads = {id(root): grad}
    order = _topological_order(root)
    order.reverse()  # popped from the end: each tensor is let go once it is done
    while order:
        tensor = order.pop()
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        node = tensor._node
        if node is None:  # a leaf: accumulate, like PyTorch
            tensor.grad = g if tensor.grad is None else tensor.grad + g
            for hook in tuple(tensor._post_accumulate_grad_hooks):
                hook(tensor)
            continue
        if node.ctx.freed:
            node.ctx.saved_tensors  # raises the "second time" error
        if _profiler is None:
            input_grads = node.function.backward(node.ctx, g)
        else:
            start = time.perf_counter()
            input_grads = node.function.backward(node.ctx, g)
            _profiler.record(node.function.__name__, "backward", time.perf_counter() - start)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if not retain_graph:
            node.ctx.free()
        for inp, ig in zip(node.inputs, input_grads):
            if ig is None or not isinstance(inp, Tensor) or not inp.requires_grad:
                continue
            key = id(inp)
            grads[key] = ig if key not in grads else grads[key] + ig
        if not retain_graph:
            # Forget the inputs too: an activation nothing references any more is
            # freed now, during the backward pass, not when the whole graph goes.
            node.inputs = ()


def reachable_leaves(root: Tensor) -> list[Tensor]:
    """The leaf tensors that ``root.backward()`` would reach (those that require grad).

    ``DistributedDataParallel(find_unused_parameters=True)`` walks the graph so after the
    forward pass: a parameter not in this list gets no gradient in the coming backward pass.

    Args:
        root: The tensor the walk starts from (an output of the forward pass).

    Returns:
        The leaves, each once; empty when ``root`` does not require grad.
    """
    if not root.requires_grad:
        return []
    return [t for t in _topological_order(root) if t.is_leaf]


def _raw(value):
    """A Tensor's array; anything else (numbers, arrays) as it is."""
    return value.data if isinstance(value, Tensor) else value


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root``, each after every tensor that uses it.

    Iterative depth-first post-order (an explicit stack instead of recursion),
    then reversed, so walking the list visits outputs before their inputs.

    An op's inputs are explored first to last (pushed in reverse): its first input,
    the activation, leads to the rest of the network and is walked after the others,
    so a layer's parameters are reached right after its op's backward, not all at the
    end. Their gradients are then complete as early as they can be, which is when
    ``DistributedDataParallel`` starts their all-reduce (overlapping the rest of the
    backward pass).
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, children_done = stack.pop()
        if children_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            for inp in reversed(tensor._node.inputs):
                if isinstance(inp, Tensor) and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    order.reverse()
    return order


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """``tinymbv2.tensor(...)``: same as ``Tensor(...)``, PyTorch's spelling.

    Args:
        data: An array, a number or a (nested) list.
        requires_grad: Whether ``backward`` computes a gradient for it.
        dtype: Cast to this dtype; None: arrays keep theirs, numbers and lists become float32.

    Returns:
        The new leaf [Tensor][tinymbv2.autograd.Tensor].
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)
