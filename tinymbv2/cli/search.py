"""``tinymbv2 search``: grid or random hyper-parameter search, a table and the best trial."""
from __future__ import annotations

import json
import numbers

from ..train import search_job
from ..train.search import RANGES  # random search: ["log", lo, hi] or ["uniform", lo, hi]
from .args import add_data_args, add_fuse_arg, add_recipe_args, positive, train_config

FORMS = ('expected a list of values, e.g. [0.01, 0.1] (grid or random), or for --kind random '
         '["log", lo, hi] (log-uniform, lo > 0) or ["uniform", lo, hi]')


def add_search(p):
    """Add the arguments of ``tinymbv2 search`` to its sub-parser ``p``."""
    add_data_args(p, default_dataset="digits")
    add_recipe_args(p)
    add_fuse_arg(p)
    p.add_argument("--kind", choices=("grid", "random"), default="grid")
    p.add_argument("--trials", type=positive(int), default=8, help="random search: trials")
    p.add_argument("--space", default='{"lr": [0.05, 0.2], "weight_decay": [0.0, 5e-4]}',
                   help='JSON object, name: values. Grid: lists of values; random: lists, '
                        'or ["log", lo, hi] / ["uniform", lo, hi] ranges')
    p.add_argument("--out", default="runs/search")


def parse_space(text: str, kind: str) -> dict:
    """The search space of ``--space`` for ``kind``.

    A JSON object whose every value is a non-empty list, or for a random search
    ``["log" | "uniform", lo, hi]`` (which becomes the tuple random search draws from). Its
    names and values are checked against the training settings by
    [check_space][tinymbv2.train.search.check_space], before the first trial.

    Args:
        text: The JSON text.
        kind: ``"grid"`` or ``"random"``.

    Returns:
        ``{setting: list of values or (kind, lo, hi)}``.

    Raises:
        ValueError: Not a JSON object of such values.
    """
    try:
        space = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"search: --space is not valid JSON ({exc})") from exc
    if not isinstance(space, dict) or not space:
        raise ValueError("search: --space must be a non-empty JSON object, name: values, "
                         'e.g. {"lr": [0.01, 0.1]}')
    parsed = {}
    for key, spec in space.items():
        if isinstance(spec, list) and spec and spec[0] in RANGES:
            parsed[key] = _range(key, spec, kind)
        elif isinstance(spec, list) and spec:
            parsed[key] = spec
        else:
            raise ValueError(f"search: --space {key!r}: {FORMS}; got {json.dumps(spec)}")
    return parsed


def _range(key, spec, kind) -> tuple:
    """``["log" | "uniform", lo, hi]`` as the tuple ``random_configs`` takes."""
    shown = json.dumps(spec)
    if kind != "random":
        raise ValueError(f"search: --space {key!r}: {shown} is a range, for --kind random; a "
                         f"grid takes a list of values, e.g. [0.01, 0.1]")
    if (len(spec) != 3 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                  for v in spec[1:])):
        raise ValueError(f"search: --space {key!r}: expected [{json.dumps(spec[0])}, lo, hi] "
                         f"with two numbers, got {shown}")
    _, lo, hi = spec
    if not lo < hi or (spec[0] == "log" and lo <= 0):
        need = "0 < lo < hi" if spec[0] == "log" else "lo < hi"
        raise ValueError(f"search: --space {key!r}: expected {need}, got {shown}")
    return tuple(spec)


def run_search_command(args) -> int:
    """Run ``tinymbv2 search`` with the parsed ``args``; returns the exit code."""
    base = train_config(args, args.out)
    space = parse_space(args.space, args.kind)
    result = search_job(base, space, args.kind, args.trials, args.seed, args.out)
    best = result["best"]
    print(f"wrote {args.out}/results.csv and best.json; best trial {best['trial']}: "
          + ", ".join(f"{k}={v}" for k, v in best.items() if k != "trial"))
    return 0
