"""``tinymbv2 search``: grid or random hyper-parameter search, a results table and the best trial."""
from __future__ import annotations

import json

from ..train import search_job
from .args import add_data_args, add_fuse_arg, add_recipe_args, positive, train_config


def add_search(p):
    add_data_args(p, default_dataset="digits")
    add_recipe_args(p)
    add_fuse_arg(p)
    p.add_argument("--kind", choices=("grid", "random"), default="grid")
    p.add_argument("--trials", type=positive(int), default=8, help="random search: trials")
    p.add_argument("--space", default='{"lr": [0.05, 0.2], "weight_decay": [0.0, 5e-4]}',
                   help="JSON: lists for grid; lists or [\"log\", lo, hi] for random")
    p.add_argument("--out", default="runs/search")


def run_search_command(args) -> int:
    try:
        space = json.loads(args.space)
    except json.JSONDecodeError as exc:
        raise ValueError(f"search: --space is not valid JSON ({exc})") from exc
    if not isinstance(space, dict) or not space:
        raise ValueError("search: --space must be a non-empty JSON object")
    space = {k: tuple(v) if isinstance(v, list) and v and v[0] in ("log", "uniform") else v
             for k, v in space.items()}
    result = search_job(train_config(args, args.out), space, args.kind, args.trials, args.seed,
                        args.out)
    best = result["best"]
    print(f"wrote {args.out}/results.csv and best.json; best trial {best['trial']}: "
          + ", ".join(f"{k}={v}" for k, v in best.items() if k != "trial"))
    return 0
