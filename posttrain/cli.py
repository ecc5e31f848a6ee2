"""`posttrain` command: one subcommand per job; `posttrain round` runs the whole loop."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from posttrain.doctor import run_doctor
from posttrain.models.gguf_import import gguf_file
from posttrain.publish.hub import HubError
from posttrain.recipe.config import RecipeError, tracking_args
from posttrain.recipe.load import load_recipe
from posttrain.reporting.report import summarize, table, write_report
from posttrain.reporting.show import eval_journeys, journeys, render, render_eval
from posttrain.run import schema
from posttrain.run.dist import shutdown, world
from posttrain.run.preemption import Preempted
from posttrain.run.rundir import RunDir, RunDirError
from posttrain.run.schema import SchemaError
from posttrain.stages.generate import PromptTooLong
from posttrain.stages.prompts import known_prompts
from posttrain.training.average import AverageError, average
from reward.custom import VerifierError
from reward.sandbox import SandboxUnavailable


STAGE_COMMANDS = {  # one-stage commands: stage -> what it makes
    "generate": "sample K completions per prompt with vLLM",
    "revise": "execution feedback: failed prompts get the verifier's reason back and more tries",
    "select": "rejection sampling: the best sample per prompt for SFT, chosen/rejected pairs for DPO",
    "judge": "the LLM judge (mix.judge) tags the round's new SFT examples",
    "mix": "dedup, decontaminate, tag and rebalance the SFT mix and DPO pairs",
    "sft": "fine-tune on the round's SFT mix",
    "dpo": "DPO on the round's pairs",
    "push": "push the round's model, data and report to the Hugging Face Hub",
}

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="recipe YAML, e.g. recipes/tiny.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.learning_rate=2e-5 rounds=1")


def setup_logging() -> None:
    """INFO on the main process; the other ranks of a launch log warnings and errors only, tagged."""
    w = world()
    tag = f" [rank {w.rank}]" if w.size > 1 else ""
    logging.basicConfig(level=logging.INFO if w.is_main else logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s{tag} %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _round(args) -> int:
    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)  # a bad recipe fails here, in a second
    from posttrain.commands import run_command  # vLLM, TRL and torch load only for the commands that run stages

    return run_command(recipe, args.recipe, args.dry_run)


def _stage(args) -> int:
    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    from posttrain.commands import stage_command  # vLLM, TRL and torch load only for the commands that run stages

    return stage_command(recipe, args.recipe, args.stage, args.round)


def _base(args) -> int:
    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    from posttrain.stages.setup import resolve_base  # TRL and torch: only for the commands that resolve a base

    if recipe.base is None and gguf_file(recipe.base_model) is None:  # a .gguf file: imported (or found cached)
        raise RecipeError(f"{args.recipe}: no `base` section: base_model {recipe.base_model} is used as given")
    print(resolve_base(recipe))
    return 0


def _report(args) -> int:
    import json

    run_dir = Path(args.run_dir)
    recipe = run_dir / "recipe.json"
    if not recipe.is_file():
        print(f"posttrain: {run_dir}: not a run directory (no recipe.json)", file=sys.stderr)
        return 2
    saved = json.loads(recipe.read_text())
    summary = summarize(RunDir(run_dir), saved["rounds"])
    page = write_report(run_dir, summary, (saved.get("mix") or {}).get("targets"))
    print(table(summary))
    print(f"\nreport: {page}")
    return 0


def _show(args) -> int:
    if args.regressed and args.eval is None:
        print("posttrain: show: --regressed compares eval results: add --eval [SET]", file=sys.stderr)
        return 2
    if args.eval is None:
        r, found = journeys(Path(args.run_dir), args.round, args.prompt, args.capability, args.failed, args.num)
    else:
        r, found = eval_journeys(Path(args.run_dir), args.round, args.eval, args.prompt, args.capability, args.failed,
                                 args.regressed, args.num)
    if not found:
        print(f"posttrain: {args.run_dir}: no prompt of round {r} matches", file=sys.stderr)
        return 1
    print("\n\n".join((render if args.eval is None else render_eval)(r, j, args.width) for j in found))
    return 0


def _score(args) -> int:
    setup_logging()
    recipe = load_recipe(args.recipe, _isolation(args))
    from posttrain.score_file import RewardModelError, reward_model_for, score_file  # torch: only for `posttrain score`

    try:
        rm, why = reward_model_for(args.reward_model, recipe)
        print(f"reward model: {rm or 'none'} ({why})", flush=True)
        rows = score_file(Path(args.input), Path(args.output), recipe.score, rm, recipe.reward_model,
                          dict(recipe.chat_template_kwargs))
    except (SchemaError, FileNotFoundError, RewardModelError) as e:
        print(f"posttrain: {e}", file=sys.stderr)
        return 2
    print(f"scored {rows} samples -> {args.output}" + (" (verifier rewards and rm_score)" if rm else ""))
    return 0


def _isolation(args) -> list[str]:
    """The overrides, with `--isolation MODE` as the recipe key it stands for (applied last)."""
    return [*args.overrides, *([f"score.sandbox.isolation={args.isolation}"] if args.isolation else [])]


def _eval(args) -> int:
    setup_logging()
    recipe = load_recipe(args.recipe, _isolation(args))
    from posttrain.commands import run_eval  # vLLM, TRL and torch load only for the commands that run stages

    out = run_eval(args.model, recipe, args.out)
    print((out / "eval.json").read_text())
    print(f"evals: {out / 'evals.parquet'}")
    return 0


def _doctor(args) -> int:
    return run_doctor(args.recipe, args.overrides)


def _reward_train(args) -> int:
    """Trains the recipe's reward model outside a round: its preference files plus the verifier pairs of
    every round its run directory has scored so far."""
    import shutil
    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    from posttrain.stages.reward_model import preference_data, train_rm  # torch: only for reward-model jobs
    from posttrain.stages.setup import resolve_base  # TRL and torch: only for the commands that resolve a base

    run = RunDir(recipe.run_dir)
    scored, r = [], 1
    scored_by = "revise" if recipe.revise.enabled else "score"  # with execution feedback: with the revisions
    while (stage := run.completed(r, scored_by)) is not None:
        scored.append(schema.read(stage.path / "scored.parquet", "scored"))
        r += 1
    prompts = run.completed(0, "prompts")
    train = known_prompts(prompts.path, list(range(1, r))) if prompts else schema.PROMPTS.empty_table()
    pairs = preference_data(scored, train, recipe.reward_model.preference_sources, recipe.select.pass_threshold)
    if not pairs:
        print(f"posttrain: no preference data: {args.recipe} has no reward_model.preference_sources and "
              f"{recipe.run_dir} has no scored round", file=sys.stderr)
        return 2
    final = Path(args.out) if args.out else recipe.run_dir / "reward_model"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    info = train_rm(tmp, resolve_base(recipe), pairs, recipe.reward_model, recipe.seed,
                    tracking_args(recipe.tracking, recipe.name, "reward_model"), dict(recipe.chat_template_kwargs))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    print(f"reward model: {final / 'model'} ({len(scored)} scored round(s), {info})")
    return 0


def _average(args) -> int:
    setup_logging()
    try:
        print(average(args.models, args.out, args.weights))
    except AverageError as e:
        print(f"posttrain: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posttrain", description="Llama 3-style post-training rounds.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("round",
                       help="run (or resume) every round of a recipe: generate, score, select, mix, sft, dpo, eval")
    add_arguments(r)
    r.add_argument("--dry-run", action="store_true",
                   help="write nothing: list the stages a run would reuse and name the first it would run, and why")
    r.set_defaults(func=_round)
    for stage, what in STAGE_COMMANDS.items():
        st = sub.add_parser(stage, help=f"round N up to its {stage} stage ({what}), reusing finished stages")
        add_arguments(st)
        st.add_argument("--round", type=int, default=1, help="which round (default 1)")
        st.set_defaults(func=_stage, stage=stage)
    b = sub.add_parser("base", help="build the recipe's tiny base model, or import its .gguf base_model, "
                                 "if it is missing (cached afterwards); prints its folder")
    add_arguments(b)
    b.set_defaults(func=_base)
    sc = sub.add_parser("score", help="score a samples file (prompt fields + completion) with the recipe's verifiers "
                                           "(and a reward model)")
    add_arguments(sc)
    sc.add_argument("--input", required=True, help="samples .jsonl or .parquet")
    sc.add_argument("--output", required=True, help="scored .parquet")
    sc.add_argument("--reward-model", metavar="PATH",
                    help="also fill rm_score with this trained reward model folder (e.g. <run dir>/round_N/"
                         "reward_model/model); default: with reward_model.enabled, the newest one trained in the "
                         "recipe's run directory, if any; 'none': verifiers only")
    _isolation_argument(sc)
    sc.set_defaults(func=_score)
    ev = sub.add_parser("eval", help="evaluate a model on the recipe's eval benchmarks (vLLM generation)")
    add_arguments(ev)
    ev.add_argument("--model", help="model folder, hub id or .gguf file (default: the recipe's base_model)")
    ev.add_argument("--out", help="output folder (default: <output_dir>/<recipe name>/eval/<model folder name>)")
    _isolation_argument(ev)
    ev.set_defaults(func=_eval)
    rw = sub.add_parser("reward", help="reward model jobs").add_subparsers(dest="reward_command", required=True,
                                                                          metavar="JOB")
    rt = rw.add_parser("train", help="train the recipe's reward model on its preference files and scored rounds")
    add_arguments(rt)
    rt.add_argument("--out", help="output folder (default: <output_dir>/<recipe name>/reward_model)")
    rt.set_defaults(func=_reward_train)
    avg = sub.add_parser("average", help="parameter-average checkpoints of one architecture (Llama 3 §4.1.5)")
    avg.add_argument("--models", nargs="+", required=True, help="model folders")
    avg.add_argument("--weights", nargs="+", type=float, help="one weight per model (default: uniform)")
    avg.add_argument("--out", required=True, help="output model folder")
    avg.set_defaults(func=_average)
    doc = sub.add_parser("doctor", help="what this machine gives a run (sandbox modes, versions, devices, disk); "
                                        "exit 1 when the recipe could not run here")
    doc.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"),
                     help="recipe YAML (default: the embedded tiny recipe)")
    doc.add_argument("overrides", nargs="*", help="dotted overrides, e.g. score.sandbox.isolation=unshare-net")
    doc.set_defaults(func=_doctor)
    rep = sub.add_parser("report", help="write RUN_DIR/report/report.md (tables and plots) and print the summary table")
    rep.add_argument("run_dir")
    rep.set_defaults(func=_report)
    sh = sub.add_parser("show", help="what a round did with some prompts: every sample with its reward and reason, "
                                     "which became the SFT example and the DPO pair, and whether the mix kept them")
    sh.add_argument("run_dir")
    sh.add_argument("--round", type=int, help="which round (default: the newest that finished its select stage, "
                                              "or with --eval its eval)")
    sh.add_argument("--prompt", action="append", default=[], metavar="ID", help="a prompt id (repeatable)")
    sh.add_argument("--capability", help="without --prompt: prompts of this capability only")
    sh.add_argument("--failed", action="store_true", help="without --prompt: only prompts that got no SFT example "
                                                          "(with --eval: no passing sample)")
    sh.add_argument("--eval", nargs="?", const="heldout", metavar="SET",
                    help="a round's eval items instead (round 0: the base), of SET (default heldout, or a benchmark)")
    sh.add_argument("--regressed", action="store_true",
                    help="with --eval, without --prompt: only items that passed in the round before and fail now")
    sh.add_argument("-n", "--num", type=int, default=3, help="without --prompt: how many prompts (default 3)")
    sh.add_argument("--width", type=int, default=160, help="characters of each completion shown (0: all)")
    sh.set_defaults(func=_show)
    return p


def _isolation_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--isolation", choices=("bwrap", "unshare-net", "rlimits-only"),
                   help="the weakest sandbox isolation model code may run under (score.sandbox.isolation; default "
                        "bwrap): name a weaker mode only knowingly, `posttrain doctor` says what each loses")


def quiet_deepspeed() -> None:
    """DeepSpeed (installed for the ZeRO configs) prints a warning to stdout on every import on a machine
    without a GPU, that it "was unable to detect" one; naming the CPU up front (inherited by the
    engine and trainer processes) keeps our output clean. Must run before transformers is imported."""
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


def main(argv: list[str] | None = None) -> int:
    quiet_deepspeed()
    args = build_parser().parse_args(argv)
    rc = 1
    try:
        rc = _run(args)
        return rc
    finally:  # every command, on every rank: the process group ends here, waiting for the others only on success
        shutdown(wait=rc == 0)


def _run(args: argparse.Namespace) -> int:
    """The command, with user-fixable failures as a message and exit status 2."""
    try:
        return args.func(args)
    except RecipeError as e:
        print(f"posttrain: recipe error: {e}", file=sys.stderr)
        return 2
    except RunDirError as e:
        print(f"posttrain: {e}", file=sys.stderr)
        return 2
    except Preempted as e:  # a training checkpointed and stopped on a signal: rerunning resumes it
        print(f"posttrain: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # user-fixable failures say why and what to do (a Hub error never with the token)
        if not isinstance(e, (HubError, PromptTooLong, VerifierError, SandboxUnavailable)):
            raise
        print(f"posttrain: {'hub push failed: ' if isinstance(e, HubError) else ''}{e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
