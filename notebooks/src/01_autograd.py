# %% [markdown]
r"""
# 1. Autograd from scratch

Training a network means nudging millions of numbers so that one number, the loss
$L$, goes down. For that we need $\partial L / \partial w$ for every weight $w$, and we
need all of them at once, for the price of about one extra pass through the network.
That is **reverse-mode automatic differentiation** (backpropagation). In this chapter we

1. write a complete engine for scalars in about 30 lines,
2. see why the nodes must be visited in *reverse topological order*,
3. meet the library's `Tensor`, which is the same idea on arrays,
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
import numpy as np
import matplotlib.pyplot as plt
import torch

import tinymbv2
from tinymbv2 import Tensor, functional as F

torch.set_default_dtype(torch.float64)
print("tinymbv2", tinymbv2.__version__, "| torch", torch.__version__, "| fast mode:", TINYMBV2_FAST)

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
We compute the gradients with our engine and with PyTorch and print the largest difference.
"""

# %%
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
print("max |ours - torch| =", max(abs(a - t) for a, t in zip(ours, theirs)))

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
try:
    topo_recursive(chain, set(), [])
    print("recursive sort: fine")
except RecursionError as e:
    print("recursive sort:", type(e).__name__, "-", e)
x0 = chain
while x0._prev:
    x0 = x0._prev[0]
chain.backward()
print("iterative sort: d(chain)/d(x0) =", x0.grad)

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
print("max |dL/dW1 - torch| =", np.abs(tW1.grad - pW1.grad.numpy()).max())
print("max |dL/dW2 - torch| =", np.abs(tW2.grad - pW2.grad.numpy()).max())

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
try:
    out.backward()
except RuntimeError as e:
    print("third backward ->", e)

# %% [markdown]
r"""
## 1.4 Checking a gradient without PyTorch: finite differences

For any function, the central difference

$$
\frac{\partial s}{\partial x_j} \approx \frac{s(x + h e_j) - s(x - h e_j)}{2h}
$$

has an error of order $h^2$ (the one-sided difference only $h$). Too small an $h$ and
floating-point cancellation takes over: the error then grows like $\varepsilon/h$. The plot
shows both regimes for $s(x) = \tanh(x)\,x$ at $x = 0.7$, in float64.

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
print("best central error %.2e at h = %.0e" % (central.min(), hs[central.argmin()]))

# %%
x = Tensor(rng.standard_normal((4, 6)), requires_grad=True)
w = Tensor(rng.standard_normal((6, 3)), requires_grad=True)
ok = tinymbv2.gradcheck(lambda x, w: F.relu6(x @ w * 3.0), [x, w])
print("gradcheck(relu6(x @ w)) passed:", ok)

# %% [markdown]
r"""
## Exercises

**1.** Add `__pow__` (a constant exponent) and `exp` to `Value`, then check
$L = e^{x} \cdot x^3$ at $x = 0.5$ against PyTorch.

<details><summary>Solution</summary>

```python
def _pow(self, k):
    out = Value(self.data ** k, (self,))
    def _backward():
        self.grad += k * self.data ** (k - 1) * out.grad
    out._backward = _backward
    return out

def _exp(self):
    e = math.exp(self.data)
    out = Value(e, (self,))
    def _backward():
        self.grad += e * out.grad
    out._backward = _backward
    return out

Value.__pow__, Value.exp = _pow, _exp
x = Value(0.5); (x.exp() * x ** 3).backward()
t = torch.tensor(0.5, requires_grad=True); (torch.exp(t) * t ** 3).backward()
print(x.grad, t.grad.item())
```

</details>

**2.** Replace `+=` by `=` in `Value.__mul__`'s backward and compute $d(x \cdot x)/dx$ at
$x = 3$. What do you get, and why?

<details><summary>Solution</summary>

You get 3 instead of 6. Both inputs of the product are the same object, so the second
assignment overwrites the first contribution. The chain rule *sums* over all uses of $x$.

</details>

**3.** Write `sin` as a library `Function` (forward and backward side by side) and check it
with `tinymbv2.gradcheck`.

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
        return g * np.cos(x)

x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
print(tinymbv2.gradcheck(lambda x: Sin.apply(x), [x]))
```

</details>
"""
