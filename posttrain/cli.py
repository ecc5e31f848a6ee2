"""`posttrain` command: one subcommand per job; `posttrain round` runs the whole loop."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from posttrain.config import RecipeError
from posttrain.rundir import RunDirError


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _round(args) -> int:
    from posttrain.round import run_command

    return run_command(args)


def _base(args) -> int:
    from posttrain.config import load_recipe
    from posttrain.round import resolve_base

    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.base is None:
        raise RecipeError(f"{args.recipe}: no `base` section: base_model {recipe.base_model} is used as given")
    print(resolve_base(recipe))
    return 0


def _report(args) -> int:
    import json
    from pathlib import Path

    from posttrain.report import table

    path = Path(args.run_dir) / "summary.json"
    if not path.is_file():
        print(f"posttrain: {path}: no summary (not a run directory, or no round has finished)", file=sys.stderr)
        return 2
    print(table(json.loads(path.read_text())))
    return 0


def _score(args) -> int:
    from pathlib import Path

    from posttrain.config import load_recipe
    from posttrain.schema import SchemaError
    from posttrain.scoring import score_file

    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    try:
        rows = score_file(Path(args.input), Path(args.output), recipe.score)
    except (SchemaError, FileNotFoundError) as e:
        print(f"posttrain: {e}", file=sys.stderr)
        return 2
    print(f"scored {rows} samples -> {args.output}")
    return 0


def _average(args) -> int:
    from posttrain.average import AverageError, average

    setup_logging()
    try:
        print(average(args.models, args.out, args.weights))
    except AverageError as e:
        print(f"posttrain: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from posttrain.round import add_arguments

    p = argparse.ArgumentParser(prog="posttrain", description="Llama 3-style post-training rounds.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("round", help="run (or resume) every round of a recipe: generate, score, select, mix, sft, dpo, eval")
    add_arguments(r)
    r.set_defaults(func=_round)
    b = sub.add_parser("base", help="build the recipe's tiny base model if it is missing (cached afterwards)")
    add_arguments(b)
    b.set_defaults(func=_base)
    sc = sub.add_parser("score", help="score a samples file (prompt fields + completion) with the recipe's verifiers")
    add_arguments(sc)
    sc.add_argument("--input", required=True, help="samples .jsonl or .parquet")
    sc.add_argument("--output", required=True, help="scored .parquet")
    sc.set_defaults(func=_score)
    avg = sub.add_parser("average", help="parameter-average checkpoints of one architecture (Llama 3 §4.1.5)")
    avg.add_argument("--models", nargs="+", required=True, help="model folders")
    avg.add_argument("--weights", nargs="+", type=float, help="one weight per model (default: uniform)")
    avg.add_argument("--out", required=True, help="output model folder")
    avg.set_defaults(func=_average)
    rep = sub.add_parser("report", help="print the summary table of a run directory")
    rep.add_argument("run_dir")
    rep.set_defaults(func=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RecipeError as e:
        print(f"posttrain: recipe error: {e}", file=sys.stderr)
        return 2
    except RunDirError as e:
        print(f"posttrain: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
