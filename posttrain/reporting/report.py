"""The run report: a summary (JSON and a terminal table) and a Markdown page with matplotlib plots.

`summarize` reads only stage manifests; `write_report` also reads each round's scored samples (for
reward distributions) and writes `<run>/report/report.md` with its PNGs (drawn by
posttrain/reporting/plots.py) beside it:
eval.png (every benchmark's headline number per round), rewards.png (per capability, the distribution
of each prompt's pass rate over its K samples, and of reward-model scores when an RM was trained),
selection.png (pass rate and kept fraction per round), mix.png (SFT mix by capability before and
after rebalancing, against the targets), tags.png (per round, by topic / quality / difficulty / complexity,
when the mix tagged its data), training.png (loss and DPO reward accuracy by step, from each trained
stage's log history) and wall_time.png (seconds per stage per round). The page also has every eval metric per
benchmark and round (pass@k, MMATH's acc_<lang> and language_match...), each round's mix composition against the
targets, the first of the items decontamination removed (all of them: round_<r>/mix/decontaminated.parquet), the
eval items each round fixed and broke, and the newest round's first DPO pair per capability with every sample
(posttrain/reporting/show.py, as `posttrain show` prints it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq

from eval.metrics import per_item
from posttrain.reporting.plots import (plot_eval, plot_mix, plot_rewards, plot_selection, plot_tags, plot_training,
                                       plot_wall, reward_distributions, training_curves)
from posttrain.reporting.summary import STAGES as STAGES
from posttrain.reporting.summary import TRAINED_STAGES as TRAINED_STAGES
from posttrain.reporting.show import journeys, render
from posttrain.reporting.summary import by_capability as by_capability  # re-exported: the report's first half
from posttrain.reporting.summary import headline
from posttrain.reporting.summary import summarize as summarize
from posttrain.run.rundir import RunDirError

log = logging.getLogger("posttrain")

def table(summary: dict) -> str:
    rounds = summary["rounds"]
    cols = list(dict.fromkeys(c for r in rounds for c in headline(r["eval"])))
    fmt = lambda v: "-" if v is None else (f"{v:.1%}" if isinstance(v, float) else str(v))  # noqa: E731
    width = max([12, *(len(c) for c in cols)])
    lines = ["eval (held-out accuracy per capability; pass@1 per benchmark; round 0 = base)",
             "round  " + "  ".join(f"{c:>{width}}" for c in cols)]
    for r in rounds:
        h = headline(r["eval"])
        lines.append(f"{r['round']:>5}  " + "  ".join(f"{fmt(h.get(c)):>{width}}" for c in cols))
    lines += ["", "round  samples  pass_rate  sft_new  sft_mix  dpo_pairs  wall time per stage (s)"]
    for r in rounds[1:]:
        wall = " ".join(f"{s}={t:.0f}" for s, t in r["wall_s"].items())
        lines.append(f"{r['round']:>5}  {fmt(r['samples']):>7}  {fmt(r['pass_rate']):>9}  {fmt(r['sft_examples']):>7}  "
                     f"{fmt(r['sft_mix']):>7}  {fmt(r['dpo_pairs']):>9}  {wall}")
    return "\n".join(lines + steps_lines(summary) + revise_lines(summary) + rm_lines(summary))


def steps_lines(summary: dict) -> list[str]:
    """Per round with `score.check_steps`: the right answers it failed because a stated equation is false."""
    lines = [f"{r['round']:>5}  {r['wrong_steps']:>11}" for r in summary["rounds"] if r.get("wrong_steps")]
    return ["", "round  wrong_steps  (right answers failed for a false equation: score.check_steps)", *lines] \
        if lines else []


def revise_lines(summary: dict) -> list[str]:
    """Per round with execution feedback: the prompts none of whose samples passed, and how many a revision saved."""
    lines = [f"{r['round']:>5}  {v['failed_prompts']:>14}  {v['revisions']:>9}  {v['rescued_prompts']:>7}"
             for r in summary["rounds"] if (v := r.get("revise"))]
    return ["", "round  failed_prompts  revisions  rescued", *lines] if lines else []


def rm_lines(summary: dict) -> list[str]:
    """Per round with a reward model: its training pairs and its accuracy on the held-out prompts' pairs."""
    lines = []
    for r in summary["rounds"]:
        rm = r.get("reward_model")
        if rm:
            held = (f"{rm['eval_accuracy']:.1%} of {rm['eval_pairs']} held-out pairs ranked right"
                    f"{by_capability(rm.get('eval_by_capability'))}" if rm.get("eval_pairs") else "no held-out pairs")
            lines.append(f"{r['round']:>5}  {rm.get('pairs') or 0:>8}  {held}")
    return ["", "round  rm_pairs  reward model accuracy (50% = chance)", *lines] if lines else []


def training_lines(summary: dict) -> list[str]:
    """A Markdown table: per round and trained stage, its steps and the last logged loss and accuracies."""
    cols = (("steps", "steps", str), ("final_loss", "final loss", "{:.3f}".format),
            ("token_accuracy", "token acc.", "{:.1%}".format), ("reward_accuracy", "DPO reward acc.", "{:.1%}".format),
            ("reward_margin", "DPO margin", "{:.3f}".format), ("train_accuracy", "RM pair acc.", "{:.1%}".format))
    rows = [f"| {r['round']} | {stage} | " + " | ".join(fmt(t[k]) if k in t else "-" for k, _, fmt in cols) + " |"
            for r in summary["rounds"] for stage, t in (r.get("training") or {}).items() if t.get("steps")]
    if not rows:
        return []
    head = "| round | stage | " + " | ".join(name for _, name, _ in cols) + " |"
    return ["## Training per round (last logging window)", "", head, "|" + "---|" * (len(cols) + 2), *rows, ""]


# --------------------------------------------------------------------------- the page and its plots


def write_report(run_dir: Path, summary: dict, targets: dict[str, float] | None = None) -> Path:
    """Writes report/report.md and its PNGs (through a temp folder, renamed into place); returns the .md path."""
    import shutil

    run_dir = Path(run_dir)
    final, tmp = run_dir / "report", run_dir / "report.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_page(tmp, run_dir, summary, targets)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed page leaves no report.tmp behind
    return final / "report.md"


def _write_page(tmp: Path, run_dir: Path, summary: dict, targets: dict[str, float] | None) -> None:
    plots = {
        "eval.png": plot_eval(summary, tmp / "eval.png"),
        "rewards.png": plot_rewards(reward_distributions(run_dir, summary), tmp / "rewards.png"),
        "selection.png": plot_selection(summary, tmp / "selection.png"),
        "mix.png": plot_mix(summary, targets, tmp / "mix.png"),
        "tags.png": plot_tags(summary, tmp / "tags.png"),
        "training.png": plot_training(training_curves(run_dir, summary), tmp / "training.png"),
        "wall_time.png": plot_wall(summary, tmp / "wall_time.png"),
    }
    pngs = [name for name, made in plots.items() if made]
    (tmp / "report.md").write_text(markdown(summary, pngs, targets, decontaminated(run_dir, summary),
                                            eval_churn(run_dir, summary), example_lines(run_dir, summary)))
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2))


def markdown(summary: dict, pngs: list[str], targets: dict[str, float] | None = None,
             removed: dict[int, tuple[int, list[dict]]] | None = None,
             churn: dict[int, dict[str, dict[str, int]]] | None = None, examples: list[str] = ()) -> str:
    """The page: `targets` the recipe's mix.targets; `removed` {round: (count, first rows)} of `decontaminated`;
    `churn` of `eval_churn`; `examples` the lines of `example_lines`."""
    captions = {"eval.png": "Eval per round", "rewards.png": "Reward distributions per capability",
                "selection.png": "Pass rate and kept fraction", "mix.png": "SFT mix by capability",
                "tags.png": "SFT mix by tag per round (selected, deduplicated, final)",
                "training.png": "Training curves", "wall_time.png": "Wall time per stage"}
    parts = [f"# Run report: {Path(summary['run']).name}", "", "```", table(summary), "```", ""]
    for png in pngs:
        parts += [f"## {captions[png]}", "", f"![{captions[png]}]({png})", ""]
    parts += eval_lines(summary) + churn_lines(churn or {}, summary["run"]) + mix_lines(summary)
    parts += composition_lines(summary, targets, removed) + training_lines(summary) + list(examples)
    detail = {r["round"]: r["eval"] for r in summary["rounds"] if r["eval"]}
    parts += ["## Every eval number", "", "```json", json.dumps(detail, indent=1), "```", ""]
    return "\n".join(parts)


def mix_lines(summary: dict) -> list[str]:
    """Per round: what the mix stage removed, and how often the LLM judge's answer was unusable."""
    lines = []
    for r in summary["rounds"]:
        m = r.get("mix")
        if not m:
            continue
        removed = ", ".join(f"{name} {m[k]}" for k, name in (
            ("exact_dups", "exact dups"), ("near_dups", "near dups"), ("contaminated", "eval leaks"),
            ("contaminated_pairs", "leaked pairs"), ("semantic_dups", "semantic dups"),
            ("below_quality_floor", "below the quality floor")) if m.get(k) is not None)
        lines.append(f"- round {r['round']}: {m['input']} SFT examples in; removed {removed}; "
                     f"{r['sft_mix']} in the mix")
        for judgment, c in (m.get("judge") or {}).items():
            lines.append(f"  - judge {judgment}: {c['asked']} asked, {c['retried']} asked again, "
                         f"{c['unknown']} unknown ({c['too_long']} too long for the judge's context)")
    return ["## Data mix per round", "", *lines, ""] if lines else []


def eval_lines(summary: dict) -> list[str]:
    """Per benchmark, a Markdown table of every metric (rows) per round (columns): what `headline` leaves out
    (pass@k for k > 1, MMATH's acc_<lang> and language_match) included."""
    rounds = [r for r in summary["rounds"] if r["eval"]]
    lines = []
    for bench in dict.fromkeys(b for r in rounds for b in r["eval"]):
        per_round = {r["round"]: metrics(r["eval"].get(bench) or {}) for r in rounds}
        names = list(dict.fromkeys(k for m in per_round.values() for k in m))
        lines += [f"### {bench}", "", "| metric | " + " | ".join(f"round {r}" for r in per_round) + " |",
                  "|---" * (len(per_round) + 1) + "|"]
        lines += [f"| {k} | " + " | ".join(_cell(m.get(k)) for m in per_round.values()) + " |" for k in names]
        lines.append("")
    return ["## Eval per benchmark (every metric; round 0 = base)", "", *lines] if lines else []


def metrics(result: dict) -> dict[str, float | int]:
    """One benchmark's numbers, flat: pass@k by k, then the rest (held-out accuracy per capability as
    "accuracy/<cap>", MMATH's acc_<lang> and language_match) in eval.json's order, then the counts."""
    flat = {}
    for k, v in result.items():
        if isinstance(v, dict):
            flat.update({f"{k}/{sub}": x for sub, x in v.items()})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[k] = v
    first = sorted((k for k in flat if k.startswith("pass@") and k[5:].isdigit()), key=lambda k: int(k[5:]))
    last = [k for k in ("items", "too_long") if k in flat]
    return {k: flat[k] for k in [*first, *(k for k in flat if k not in first + last), *last]}


def _cell(v) -> str:
    """A rate as a percentage, a count (items, too_long) as is."""
    return "-" if v is None else f"{v:.1%}" if isinstance(v, float) else str(v)


TAG_KINDS = ("topic", "quality", "complexity", "difficulty")
# (composition key, the mix counts' by-capability key, column) for each step of the mix
MIX_STEPS = (("input", "input_by_capability", "selected"),
             ("before", "before_rebalance", "deduplicated + decontaminated"), ("after", "by_capability", "final mix"))


def composition_lines(summary: dict, targets: dict[str, float] | None,
                      removed: dict[int, tuple[int, list[dict]]] | None) -> list[str]:
    """Per round with a mix: its composition table and the items decontamination removed."""
    lines = []
    for r in summary["rounds"]:
        if r.get("mix"):
            lines += [f"### Round {r['round']}", "", *composition_table(r["mix"], targets), "",
                      *decontaminated_lines(r["round"], (removed or {}).get(r["round"]))]
    head = ("SFT examples per capability (and per tag when the mix tagged its data) as selected, after dedup and "
            "decontamination, and in the final mix after rebalancing, against `mix.targets`.")
    return ["## Mix composition per round", "", head, "", *lines] if lines else []


def composition_table(mix: dict, targets: dict[str, float] | None) -> list[str]:
    """Rows: capability (every target too), then each tag kind the mix counted; a step not counted is "-"."""
    comp = mix.get("composition") or {}
    steps = [{"capability": mix.get(key), **{k: v for k, v in (comp.get(when) or {}).items() if k in TAG_KINDS}}
             for when, key, _ in MIX_STEPS]
    total = sum((mix.get("by_capability") or {}).values())
    lines = ["| by | value | " + " | ".join(name for *_, name in MIX_STEPS) + " | share of the final mix | target |",
             "|---" * (len(MIX_STEPS) + 4) + "|"]
    for kind in ("capability", *TAG_KINDS):
        extra = (targets or {}) if kind == "capability" else {}
        for value in dict.fromkeys([*(v for step in steps for v in step.get(kind) or {}), *extra]):
            cells = [None if step.get(kind) is None else step[kind].get(value, 0) for step in steps]
            share = f"{cells[-1] / total:.1%}" if total and cells[-1] is not None else "-"
            target = f"{extra[value]:.1%}" if value in extra else "-"
            lines.append(f"| {kind} | {value} | " + " | ".join(_cell(c) for c in cells) + f" | {share} | {target} |")
    return lines


def decontaminated(run_dir: Path, summary: dict, first: int = 20) -> dict[int, tuple[int, list[dict]]]:
    """{round: (rows, the first `first` rows as {table, id, eval_id})} of each mixed round's
    decontaminated.parquet (a round whose mix is not in the summary is left out)."""
    out = {}
    for r in summary["rounds"]:
        path = Path(run_dir) / f"round_{r['round']}" / "mix" / "decontaminated.parquet"
        if r.get("mix") and path.is_file():
            t = pq.read_table(path, columns=["table", "id", "eval_id"])
            out[r["round"]] = (t.num_rows, t.slice(0, first).to_pylist())
    return out


def decontaminated_lines(round_: int, removed: tuple[int, list[dict]] | None) -> list[str]:
    """How many SFT examples and DPO pairs decontamination removed, and the first of them (id -> eval item)."""
    if removed is None:
        return []
    n, rows = removed
    where = f"`round_{round_}/mix/decontaminated.parquet` in the run folder"
    if not n:
        return [f"Decontamination removed nothing ({where}).", ""]
    shown = f"the first {len(rows)}" if len(rows) < n else "all"
    return [f"Decontamination removed {n} items (SFT examples and DPO pairs); {shown}, id -> eval item "
            f"(the full list: {where}):", "",
            *(f"- {row['table']} `{row['id']}` -> `{row['eval_id']}`" for row in rows), ""]


def eval_churn(run_dir: Path, summary: dict) -> dict[int, dict[str, dict[str, int]]]:
    """{round: {eval set: {items, passing, fixed, broken}}} for each evaluated round after the first: items with
    a passing sample now and none in the round evaluated before (fixed), and the reverse (broken). A net gain
    hides both; the broken ones are what `posttrain show --eval --regressed` lists."""
    passed: dict[int, dict[str, dict[str, bool]]] = {}
    for r in (r["round"] for r in summary["rounds"] if r["eval"]):
        path = Path(run_dir) / f"round_{r}" / "eval" / "evals.parquet"
        if path.is_file():
            rows = pq.read_table(path, columns=["benchmark", "prompt_id", "reward"]).to_pylist()
            for name in dict.fromkeys(row["benchmark"] for row in rows):
                items = per_item([row for row in rows if row["benchmark"] == name])
                passed.setdefault(r, {})[name] = {i: c > 0 for i, (n, c) in items.items()}
    out: dict[int, dict[str, dict[str, int]]] = {}
    for before, r in zip(sorted(passed), sorted(passed)[1:]):
        for name, now in passed[r].items():
            if name in passed[before]:
                was = passed[before][name]
                out.setdefault(r, {})[name] = {
                    "items": len(now), "passing": sum(now.values()),
                    "fixed": sum(1 for i, ok in now.items() if ok and was.get(i) is False),
                    "broken": sum(1 for i, ok in now.items() if not ok and was.get(i))}
    return out


def churn_lines(churn: dict[int, dict[str, dict[str, int]]], run: str) -> list[str]:
    if not churn:
        return []
    lines = ["## Eval items fixed and broken per round", "",
             "Items with a passing sample now and none in the round before (fixed), and the reverse (broken): "
             f"`posttrain show {run} --eval SET --round R --regressed` lists the broken ones.", "",
             "| round | set | items | passing | fixed | broken |", "|---|---|---|---|---|---|"]
    lines += [f"| {r} | {name} | {c['items']} | {c['passing']} | {c['fixed']} | {c['broken']} |"
              for r, sets in churn.items() for name, c in sets.items()]
    return [*lines, ""]


def example_lines(run_dir: Path, summary: dict) -> list[str]:
    """The newest selected round's first DPO pair of each capability, as `posttrain show` prints it."""
    rounds = [r["round"] for r in summary["rounds"] if r.get("dpo_pairs")]
    pairs = Path(run_dir) / f"round_{rounds[-1]}" / "select" / "pairs.parquet" if rounds else None
    if pairs is None or not pairs.is_file() or not (Path(run_dir) / "run.json").is_file():
        return []
    first: dict[str, str] = {}
    for row in pq.read_table(pairs, columns=["prompt_id", "capability"]).to_pylist():
        first[row["capability"]] = min(first.get(row["capability"], row["prompt_id"]), row["prompt_id"])
    try:
        r, found = journeys(Path(run_dir), rounds[-1], [first[c] for c in sorted(first)])
    except RunDirError as e:  # e.g. a run directory from before its manifests named their inputs: no examples
        log.warning("report: no examples: %s", e)
        return []
    # A four-backtick fence: completions hold ``` of their own.
    return [f"## Examples (round {r}: the first DPO pair of each capability)", "",
            f"Every sample, best first; `posttrain show {summary['run']} --round {r}` shows others.", "", "````",
            "\n\n".join(render(r, j) for j in found), "````", ""]
