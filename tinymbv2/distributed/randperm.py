r"""``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``, drawn in NumPy.

PyTorch's ``DistributedSampler`` shuffles with that call, so drawing the same permutation
here gives every rank the very indices a PyTorch run would give it (the tests compare them).
PyTorch's CPU generator is the Mersenne Twister MT19937 seeded with the low 32 bits of the
seed by the reference ``init_genrand``:

$$
k_0 = s \bmod 2^{32}, \qquad
k_i = (1812433253\,(k_{i-1} \oplus (k_{i-1} \gg 30)) + i) \bmod 2^{32}
\quad (i = 1 \dots 623)
$$

NumPy's ``MT19937`` bit generator takes that state as it is, and its ``random_raw`` gives
the same 32-bit words as PyTorch's ``generator->random()``. ``randperm`` is then a forward
Fisher-Yates shuffle: for $i = 0 \dots n-2$, swap $r_i$ with $r_{i+z}$, $z = u_i \bmod (n - i)$,
$u_i$ the $i$-th word. (The modulo makes small $z$ slightly likelier when $n - i$ does not
divide $2^{32}$; PyTorch accepts that bias, and matching it is the point here.)
"""
from __future__ import annotations

import numpy as np


def mt19937(seed: int) -> np.random.MT19937:
    """NumPy's MT19937 in the state PyTorch's ``Generator.manual_seed(seed)`` leaves it.

    Args:
        seed: The seed, an int >= 0 (its low 32 bits count, as in PyTorch).

    Returns:
        The bit generator; its ``random_raw`` gives PyTorch's 32-bit words.
    """
    key = np.empty(624, dtype=np.uint32)
    key[0] = seed & 0xFFFFFFFF
    for i in range(1, 624):
        prev = int(key[i - 1])
        key[i] = (1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF
    bits = np.random.MT19937(0)
    bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624}}
    return bits


def torch_randperm(n: int, seed: int) -> np.ndarray:
    """The permutation of ``0 .. n-1`` that ``torch.randperm(n, generator=g)`` returns for
    ``g = torch.Generator(); g.manual_seed(seed)``.

    Args:
        n: The length, an int >= 0 (below $2^{32}$, where PyTorch's CPU draw is the one here).
        seed: The generator's seed, an int >= 0.

    Returns:
        An int64 array (n,).

    Raises:
        ValueError: ``n`` or ``seed`` is not an int >= 0, or ``n`` is too large.
    """
    for name, v in (("n", n), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"torch_randperm: expected {name} an int >= 0, got {v!r}")
    if n >= 2 ** 32:
        raise ValueError(f"torch_randperm: expected n < 2**32, got {n}")
    r = list(range(n))
    words = mt19937(int(seed)).random_raw(max(n - 1, 0)).tolist()
    for i, u in enumerate(words):  # sequential by nature: each swap moves what the next sees
        j = i + u % (n - i)
        r[i], r[j] = r[j], r[i]
    return np.array(r, dtype=np.int64)
