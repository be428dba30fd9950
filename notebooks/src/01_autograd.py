# %% [markdown]
r"""
# 1. Autograd from scratch

Training a network means nudging millions of numbers so that one number, the loss
$L$, goes down. For that we need $\partial L / \partial w$ for every weight $w$, and we
need all of them at once, for the price of about one extra pass through the network.
That is **reverse-mode automatic differentiation** (backpropagation). In this chapter we

1. write a complete engine for scalars in about 30 lines,
2. see why the nodes must be visited in *reverse topological order*,
3. meet the library's `Tensor`, which is the same idea on arrays, and draw the graph it records,
4. check both against PyTorch, and check the library against finite differences.

**The chain rule on a graph.** Every computation is a graph: leaves are inputs and
weights, inner nodes are operations. If a value $x$ is used by several nodes $y_1, \dots, y_k$,
the multivariate chain rule says

$$
\frac{\partial L}{\partial x} \;=\; \sum_{i=1}^{k} \frac{\partial L}{\partial y_i}\,\frac{\partial y_i}{\partial x}.
$$

So if we already know $\partial L/\partial y_i$ for every *user* of $x$, one multiplication by the
*local* derivative $\partial y_i/\partial x$ per user gives $\partial L/\partial x$. Start at $L$ with
$\partial L/\partial L = 1$ and walk backwards: each node needs its users to be finished first.
An order in which every node comes after all of its users is a reverse topological order.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import math
import sys
import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor, functional as F
from tinymbv2.graph_drawing import draw_graph

print("tinymbv2", tinymbv2.__version__, "| fast mode:", TINYMBV2_FAST)

# %% [markdown]
r"""
## 1.1 A scalar engine in 30 lines

Each `Value` remembers its inputs (`_prev`) and a small closure `_backward` that pushes its
own gradient to its inputs, multiplied by the local derivative. The local derivatives sit
right beside the forward computation: for $y = a b$, $\partial y/\partial a = b$; for
$y = \tanh a$, $\partial y / \partial a = 1 - y^2$.

Note the `+=`: a value used twice receives two contributions (the sum in the chain rule).
"""

# %%
class Value:
    """A scalar that remembers how it was computed."""

    def __init__(self, data, _prev=()):
        self.data, self.grad, self._prev, self._backward = data, 0.0, _prev, lambda: None

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))
        def _backward():                      # d(a+b)/da = 1, d(a+b)/db = 1
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))
        def _backward():                      # d(ab)/da = b, d(ab)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))
        def _backward():                      # d tanh(a)/da = 1 - tanh(a)^2
            self.grad += (1 - t * t) * out.grad
        out._backward = _backward
        return out

    __radd__, __rmul__ = __add__, __mul__

    def backward(self):
        order, seen, stack = [], set(), [(self, False)]
        while stack:                          # iterative depth-first post-order
            v, done = stack.pop()
            if done:
                order.append(v)
            elif id(v) not in seen:
                seen.add(id(v))
                stack.append((v, True))
                stack.extend((p, False) for p in v._prev)
        self.grad = 1.0
        for v in reversed(order):             # every node after all of its users
            v._backward()

# %% [markdown]
r"""
A single neuron, $L = \tanh(w_1 x_1 + w_2 x_2 + b)\cdot x_1$. Note that $x_1$ is used twice.
We compute the gradients with our engine and with PyTorch (imported here, where we first
compare with it, in float64 like our Python floats) and assert that they agree.
"""

# %%
import torch

torch.set_default_dtype(torch.float64)
print("torch", torch.__version__)

x1, x2, w1, w2, b = Value(2.0), Value(-1.0), Value(0.5), Value(-1.5), Value(0.3)
L = (w1 * x1 + w2 * x2 + b).tanh() * x1
L.backward()
ours = [v.grad for v in (x1, x2, w1, w2, b)]

tx = [torch.tensor(v, requires_grad=True) for v in (2.0, -1.0, 0.5, -1.5, 0.3)]
tL = torch.tanh(tx[2] * tx[0] + tx[3] * tx[1] + tx[4]) * tx[0]
tL.backward()
theirs = [t.grad.item() for t in tx]

print("L  =", L.data, " torch:", tL.item())
for name, a, t in zip(("x1", "x2", "w1", "w2", "b"), ours, theirs):
    print(f"dL/d{name}: ours {a:+.10f}  torch {t:+.10f}")
largest = max(abs(a - t) for a, t in zip(ours, theirs))
print("max |ours - torch| =", largest)
assert abs(L.data - tL.item()) < 1e-12 and largest < 1e-12, "the scalar engine disagrees with PyTorch"

# %% [markdown]
r"""
## 1.2 Why the order matters

Below we print the order in which `backward` visits the nodes of that little graph. A
node's `_backward` reads `out.grad`, so it may run only once *every* user has added its
share. Run the closures in a wrong order (say, inputs before outputs) and some gradients
are read while still incomplete.

The walk uses an explicit stack instead of recursion. A recursive topological sort is the
textbook version, but Python stops recursing at about 1,000 frames, and a long chain of
operations (an RNN unrolled in time, a long loop of small ops) is deeper than that. Let us
prove it with a chain of 5,000 additions.
"""

# %%
def label(v, names={id(x1): "x1", id(x2): "x2", id(w1): "w1", id(w2): "w2", id(b): "b"}):
    return names.get(id(v), f"{v.data:+.3f}")

order, seen, stack = [], set(), [(L, False)]
while stack:
    v, done = stack.pop()
    if done:
        order.append(v)
    elif id(v) not in seen:
        seen.add(id(v)); stack.append((v, True)); stack.extend((p, False) for p in v._prev)
print("backward visits:", " -> ".join(label(v) for v in reversed(order)))


def topo_recursive(v, seen, order):
    if id(v) not in seen:
        seen.add(id(v))
        for p in v._prev:
            topo_recursive(p, seen, order)
        order.append(v)

chain = Value(1.0)
for _ in range(5000):
    chain = chain + 1.0
print("Python's recursion limit:", sys.getrecursionlimit())
try:
    topo_recursive(chain, set(), [])
    recursion_failed = False
    print("recursive sort: fine")
except RecursionError as e:
    recursion_failed = True
    print("recursive sort:", type(e).__name__, "-", e)
x0 = chain
while x0._prev:
    x0 = x0._prev[0]
chain.backward()
print("iterative sort: d(chain)/d(x0) =", x0.grad)
assert recursion_failed and x0.grad == 1.0, "the recursive sort should fail, the iterative one give 1"

# %% [markdown]
r"""
## 1.3 The library's Tensor: the same idea on arrays

`tinymbv2.Tensor` wraps a NumPy array. Each operation is a `Function` with a
`forward(ctx, ...)` and a `backward(ctx, grad)` written side by side (open
`tinymbv2/functional/basic.py`); `Function.apply` records a node, and `Tensor.backward`
walks the nodes in reverse topological order exactly as above, with an iterative sort.

For arrays the local derivative is a matrix, but we never build it: `backward` receives
$G = \partial L/\partial Y$ (same shape as $Y$) and returns $\partial L/\partial X$. For
$Y = X W$ that is $\partial L/\partial X = G W^\top$ and $\partial L/\partial W = X^\top G$.

A two-layer perceptron with a cross-entropy loss, in tinymbv2 and in PyTorch with the same
numbers:
"""

# %%
rng = np.random.default_rng(0)
X = rng.standard_normal((8, 5))
W1, W2 = rng.standard_normal((5, 16)) * 0.5, rng.standard_normal((16, 3)) * 0.5
y = rng.integers(0, 3, size=8)

def mlp(lib_X, lib_W1, lib_W2, relu, ce):
    return ce(relu(lib_X @ lib_W1) @ lib_W2, y)

tW1, tW2 = Tensor(W1.copy(), requires_grad=True), Tensor(W2.copy(), requires_grad=True)
loss = mlp(Tensor(X), tW1, tW2, F.relu, F.cross_entropy)
loss.backward()

pW1, pW2 = torch.tensor(W1, requires_grad=True), torch.tensor(W2, requires_grad=True)
ploss = mlp(torch.tensor(X), pW1, pW2, torch.relu,
            lambda z, t: torch.nn.functional.cross_entropy(z, torch.tensor(t)))
ploss.backward()

print("loss: tinymbv2 %.12f  torch %.12f" % (loss.item(), ploss.item()))
errors = [abs(loss.item() - ploss.item()), np.abs(tW1.grad - pW1.grad.numpy()).max(),
          np.abs(tW2.grad - pW2.grad.numpy()).max()]
print("max |dL/dW1 - torch| =", errors[1])
print("max |dL/dW2 - torch| =", errors[2])
assert max(errors) < 1e-12, "tinymbv2 and PyTorch disagree on the MLP"

# %% [markdown]
r"""
Two rules the engine enforces, both as in PyTorch:

* gradients **accumulate** into `.grad` (a tensor used twice gets both contributions, and a
  second `backward` adds to the first: that is why training loops call `zero_grad()`);
* the arrays a node saved for its backward are freed after the first `backward`, so a second
  one through the same graph fails with a clear message unless you asked for
  `retain_graph=True`.
"""

# %%
a = Tensor(np.array([3.0]), requires_grad=True)
out = (a * a).sum()            # a is used twice: d(a^2)/da = 2a = 6
out.backward(retain_graph=True)
print("after one backward :", a.grad)
out.backward()
print("after two backwards:", a.grad, "(accumulated)")
assert a.grad[0] == 12.0
try:
    out.backward()
    raise AssertionError("a third backward through a freed graph should fail")
except RuntimeError as e:
    print("third backward ->", e)

# %% [markdown]
r"""
## 1.4 Seeing the graph

Every operation on tensors that need a gradient recorded a node: the `Function`, what its
backward needs, and its inputs (`tensor._node`). `draw_graph` (in
`tinymbv2/graph_drawing.py`) walks those nodes from the output back to the leaves, as
`backward` does, and draws them: blue boxes for the tensors (value, and gradient once
`backward` has run), circles for the operations, arrows in the direction of the forward
pass. Backward walks the same arrows from right to left.

Here is $L = \sum \mathrm{ReLU}(a \odot b + c)$ for three vectors of two numbers. `backward`
frees the graph as it goes (the rule above), so we keep it with `retain_graph=True` to draw
it afterwards. Only the leaves keep a gradient, as in PyTorch.
"""

# %%
a = Tensor(np.array([2.0, -1.0]), requires_grad=True)
b = Tensor(np.array([3.0, 4.0]), requires_grad=True)
c = Tensor(np.array([-1.0, 0.5]), requires_grad=True)
L = ((a * b) + c).relu().sum()
L.backward(retain_graph=True)

graph = draw_graph(L, names={"a": a, "b": b, "c": c, "L": L})
plt.title("L = sum(relu(a * b + c)): the forward pass left to right")
plt.show()
print("boxes:", len(graph.nodes), "| arrows:", len(graph.edges))

passed = (a.data * b.data + c.data) > 0      # where the ReLU lets the gradient through
print("a * b + c =", a.data * b.data + c.data, "-> ReLU passes", passed)
print("dL/da =", a.grad, " dL/db =", b.grad, " dL/dc =", c.grad)
assert np.array_equal(a.grad, b.data * passed) and np.array_equal(b.grad, a.data * passed)
assert np.array_equal(c.grad, 1.0 * passed)
print("checked: dL/da = b * mask, dL/db = a * mask, dL/dc = mask")

# %% [markdown]
r"""
Read the gradients off the picture, from right to left: the sum sends 1 to each component;
the ReLU passes it only where its input was positive (the first component: $6 - 1 = 5$),
and blocks it where it was negative ($-4 + 0.5$); the add passes it unchanged to both
inputs; the multiply sends each input the *other* input's value. So
$\partial L/\partial a = b \odot \text{mask}$, with the second component 0.

## 1.5 Checking a gradient without PyTorch: finite differences

For any function, the central difference

$$
\frac{\partial s}{\partial x_j} \approx \frac{s(x + h e_j) - s(x - h e_j)}{2h}
$$

has an error of order $h^2$ (the one-sided difference only $h$). Too small an $h$ and
floating-point cancellation takes over: the error then grows like $\varepsilon/h$. The plot
shows both regimes for $s(x) = \tanh(x)\,x$ at $x = 0.7$, in float64, and the cell measures
the slope of each line where $h$ is large, which is the order of the error.

`tinymbv2.gradcheck` uses central differences in float64 on $s = \langle v, f(x) \rangle$ with a
*random* $v$, never on `f(x).sum()` (chapter 3 shows why that matters).
"""

# %%
f = lambda x: np.tanh(x) * x
df = lambda x: (1 - np.tanh(x) ** 2) * x + np.tanh(x)
hs = np.logspace(-14, -1, 60)
x = 0.7
central = np.abs((f(x + hs) - f(x - hs)) / (2 * hs) - df(x))
forward = np.abs((f(x + hs) - f(x)) / hs - df(x))

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.loglog(hs, forward, label="one-sided  (error ~ h)")
ax.loglog(hs, central, label="central  (error ~ h²)")
ax.set_xlabel("step h"); ax.set_ylabel("|numeric - exact|"); ax.grid(alpha=0.3); ax.legend()
ax.set_title("Finite differences in float64")
plt.show()

large = hs > 1e-3  # where the truncation error dominates
slope = lambda err: np.polyfit(np.log(hs[large]), np.log(err[large]), 1)[0]
print(f"slope for large h: one-sided {slope(forward):.2f}, central {slope(central):.2f}")
print("best one-sided error %.1e at h = %.0e" % (forward.min(), hs[forward.argmin()]))
print("best central error   %.1e at h = %.0e" % (central.min(), hs[central.argmin()]))
assert 0.8 < slope(forward) < 1.2 and 1.8 < slope(central) < 2.2, "orders h and h^2"
assert central.min() < forward.min() / 100 and hs[central.argmin()] > hs[forward.argmin()]
assert central[0] > central.min() * 1e3, "a tiny h is dominated by rounding"
print("checked: errors of order h and h^2; central is best at a larger h, and far better there")

# %% [markdown]
r"""
The two best steps differ: the central difference's truncation error shrinks faster, so it
can stop at a larger $h$, before the rounding error $\varepsilon/h$ grows.
"""

# %%
x = Tensor(rng.standard_normal((4, 6)), requires_grad=True)
w = Tensor(rng.standard_normal((6, 3)), requires_grad=True)
ok = tinymbv2.gradcheck(lambda x, w: F.relu6(x @ w * 3.0), [x, w])
print("gradcheck(relu6(x @ w)) passed:", ok)
assert ok

# %% [markdown]
r"""
## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see:
it prints `correct` or a hint naming the case that failed. The solutions are folded away
below each one.

### Exercise 1.1

Write `backward_order(root)`: the nodes of a scalar graph (each has its inputs in
`node._prev`, as `Value` does) in an order `backward` can run them: every node exactly
once, the root first, and every node after all the nodes that use it. The chapter's version
is a depth-first search; try Kahn's algorithm instead: count each node's users, start with
the root, and let a node go out once its last user has. The check includes a chain of 5,000
nodes.
"""

# %%
from tinymbv2.exercises import check_backward_order


def backward_order(root):
    """Every node reachable from root through _prev, root first, each after all its users."""
    raise NotImplementedError("your code here")


check_backward_order(backward_order)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def backward_order(root):
    users, seen, stack = {}, {id(root)}, [root]
    while stack:                        # count, for every node, the nodes that use it
        node = stack.pop()
        for p in node._prev:            # a node used twice by one user counts twice
            users[id(p)] = users.get(id(p), 0) + 1
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    order, ready = [], [root]
    while ready:                        # a node is ready once all its users are out
        node = ready.pop()
        order.append(node)
        for p in node._prev:
            users[id(p)] -= 1
            if users[id(p)] == 0:
                ready.append(p)
    return order
```

Both loops use an explicit list, so the 5,000-node chain is no deeper for Python than a
single node.

</details>

### Exercise 1.2

Write the backward of $\sin$ as a library `Function`: `backward(ctx, g)` receives the
upstream gradient $g = \partial L/\partial y$ and returns $\partial L/\partial x$. The forward
is given and saves $x$.
"""

# %%
from tinymbv2.exercises import check_sin_function


class Sin(tinymbv2.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x)

    @staticmethod
    def backward(ctx, g):
        """g = dL/dy, shaped like x -> dL/dx."""
        raise NotImplementedError("your code here")


check_sin_function(Sin)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
class Sin(tinymbv2.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * np.cos(x)      # upstream gradient times the local derivative
```

</details>

### Exercise 1.3

For $Y = X W$ with $X$ of shape $(n, k)$ and $W$ of shape $(k, m)$, write the two gradients
of the loss given $G = \partial L/\partial Y$. Each has the shape of what it is the gradient
of; that alone tells you where the transposes go.
"""

# %%
from tinymbv2.exercises import check_matmul_backward


def matmul_backward(X, W, G):
    """X (n, k), W (k, m), G = dL/dY (n, m) -> (dL/dX (n, k), dL/dW (k, m))."""
    raise NotImplementedError("your code here")


check_matmul_backward(matmul_backward)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def matmul_backward(X, W, G):
    return G @ W.T, X.T @ G
```

$Y_{ij} = \sum_p X_{ip} W_{pj}$, so $\partial L/\partial X_{ip} = \sum_j G_{ij} W_{pj} = (G W^\top)_{ip}$
and $\partial L/\partial W_{pj} = \sum_i X_{ip} G_{ij} = (X^\top G)_{pj}$.

</details>

### Exercise 1.4

Write `central_difference(f, x, h)`: the gradient of a scalar function `f` at the array `x`
by central differences, one element at a time. Leave `x` as you found it.
"""

# %%
from tinymbv2.exercises import check_central_difference


def central_difference(f, x, h=1e-5):
    """f: array -> float; x: float64 array -> array shaped like x, (f(x+h e_j) - f(x-h e_j)) / 2h."""
    raise NotImplementedError("your code here")


check_central_difference(central_difference)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def central_difference(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for j in np.ndindex(x.shape):
        old = x[j]
        x[j] = old + h
        up = f(x)
        x[j] = old - h
        down = f(x)
        x[j] = old                # put it back
        grad[j] = (up - down) / (2 * h)
    return grad
```

This is what `tinymbv2.gradcheck` does for every input element, on $\langle v, f(x)\rangle$
with a random $v$.

</details>
"""
