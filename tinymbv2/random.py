"""The package's random state: one seeded NumPy generator, like ``torch.manual_seed``."""
from __future__ import annotations

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the global generator used by init and dropout when none is passed.

    Args:
        seed: The seed.

    Returns:
        The new global ``np.random.Generator``.
    """
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    """The package's global ``np.random.Generator`` (what ``generator=None`` draws from)."""
    return _generator


def get_state() -> dict:
    """The generator's state, for checkpoints (a JSON-able dict)."""
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    """Restore the generator's ``state``, a dict from [get_state][tinymbv2.random.get_state]."""
    _generator.bit_generator.state = state
