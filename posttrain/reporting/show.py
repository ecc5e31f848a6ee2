"""`posttrain show RUN_DIR`: what one round did with a prompt, read from the run directory's tables.

For each prompt: its messages and verifier metadata, then every sample it got, best first as the select
stage ranked them (selection.rank with the stage's config), with the verifier's reason, and where each
went: the SFT example, the DPO chosen and rejected, and whether the round's mix kept the SFT example and the
pair (and how often the rebalancing repeats it) or dropped them (decontamination names the eval item).

With `--eval [SET]` (held-out prompts or a benchmark): a round's eval items instead, each sample's reward and
reason, and the item's passing samples in every round's eval (round 0: the base), to see what a round fixed
or broke (`--regressed`: items that passed in the round before and fail now).

The tables are found by id (the scored table select ranked through its manifest, the round's prompt files by
posttrain.stages.prompts.train_files), never by position; a sample is marked by its text, since the SFT example and
the pair hold text.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from eval.metrics import per_item
from posttrain.stages.prompts import train_files
from posttrain.run.rundir import RunDir, RunDirError, StageOutput, in_run
from posttrain.stages.selection import rank

META = ("answer", "entry_point", "tests", "expected_call", "language")  # shown under the prompt when set
REPEAT = re.compile(r"#rep\d+$")  # the suffix of a rebalancing copy's id (data_mix/rebalance.py)


def finished(run: RunDir, stage: str) -> list[int]:
    """The rounds whose `stage` finished, in order."""
    done = run.root.glob(f"round_*/{stage}/manifest.json")
    return sorted(int(p.parents[1].name.removeprefix("round_")) for p in done)


def _open(run_dir: Path, r: int | None, stage: str) -> tuple[RunDir, int]:
    """The run (read only) and the round to show: `r`, else the newest whose `stage` finished."""
    if not (Path(run_dir) / "run.json").is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no run.json)")
    run = RunDir(run_dir, dry_run=True)  # reads only
    if r is None:
        done = finished(run, stage)
        if not done:
            raise RunDirError(f"{run.root}: no round has finished its {stage} stage yet")
        r = done[-1]
    return run, r


def _stage(run: RunDir, r: int, name: str) -> StageOutput:
    out = run.completed(r, name)
    if out is None:
        raise RunDirError(f"{run.stage_dir(r, name)}: round {r} has not finished its {name} stage")
    return out


def _scored(run: RunDir, select: StageOutput) -> Path:
    """The scored table the select stage ranked (score's, revise's or the reward model's), from its manifest."""
    paths = [run.root / in_run(p) for p in select.manifest["inputs"]]
    scored = next((p / "scored.parquet" for p in paths if (p / "scored.parquet").is_file()), None)
    if scored is None:
        raise RunDirError(f"{select.path}/manifest.json: names no scored table or prompt file among its inputs")
    return scored


def _text(messages: list[dict]) -> str:
    return messages[-1]["content"]


def journeys(run_dir: Path, r: int | None = None, prompt_ids: list[str] = (), capability: str | None = None,
             failed: bool = False, num: int = 3) -> tuple[int, list[dict]]:
    """(round, one record per prompt): the prompt, its samples best first with what became of each, and
    the mix's verdict on its SFT example and pair. Without prompt_ids: the first `num` prompt ids (sorted)
    of `capability` (any if None), only those that got no SFT example when `failed`."""
    run, r = _open(run_dir, r, "select")
    select = _stage(run, r, "select")
    scored_file, prompt_files = _scored(run, select), train_files(run.stage_dir(0, "prompts"), [r])
    seed = json.loads((run.root / "recipe.json").read_text())["seed"]
    selected = set(pq.read_table(select.path / "sft.parquet", columns=["prompt_id"])["prompt_id"].to_pylist())
    prompts = _pick(prompt_files, prompt_ids, capability, lambda i: not (failed and i in selected), num, f"round {r}")
    ids = list(prompts)
    sft, pairs = ({row["prompt_id"]: row for row in _rows(select.path / f"{t}.parquet", "prompt_id", ids)}
                  for t in ("sft", "pairs"))
    scored = _rows(scored_file, "prompt_id", ids)
    mix = run.completed(r, "mix")
    kept = _mix_verdicts(mix) if mix else None
    out = []
    for pid in ids:
        samples = _ranked([s for s in scored if s["prompt_id"] == pid], prompts[pid]["capability"], select, seed)
        example, pair = sft.get(pid), pairs.get(pid)
        for s in samples:
            s["went"] = []
        # Selection took the SFT example and the chosen from the top of the ranking, the rejected from its
        # bottom: of samples with the same text, the first (last) in rank is the one it took.
        for name, text, order in (("SFT", example and _text(example["messages"]), samples),
                                  ("chosen", pair and _text(pair["chosen"]), samples),
                                  ("rejected", pair and _text(pair["rejected"]), samples[::-1])):
            taken = next((s for s in order if text is not None and s["completion"] == text), None)
            if taken is not None:
                taken["went"].append(name)
        out.append({"prompt": prompts[pid], "samples": samples, "sft": example is not None, "pair": pair is not None,
                    "pass_threshold": select.manifest["config"]["select"]["pass_threshold"],
                    "mix": None if kept is None else {t: kept[t].get(f"{pid}/round{r}") for t in ("sft", "pairs")}})
    return r, out


def _pick(files: list[Path], prompt_ids: list[str], capability: str | None, keep: Callable[[str], bool], num: int,
          what: str) -> dict[str, dict]:
    """{id: prompt} to show from prompt files `files`: `prompt_ids` (each must be there), else the first `num` ids
    (sorted) of `capability` (any if None) that `keep` accepts. Whole rows are read for those only."""
    caps = {}
    for file in files:
        caps.update(zip(*pq.read_table(file, columns=["id", "capability"]).to_pydict().values()))
    unknown = [i for i in prompt_ids if i not in caps]
    if unknown:
        names = ", ".join(str(f) for f in files)
        raise RunDirError(f"{names}: no prompt {unknown[0]!r} in {what} ({len(caps)} prompts)")
    ids = list(prompt_ids) or [i for i in sorted(caps) if capability in (None, caps[i]) and keep(i)][:num]
    by_id = {p["id"]: p for file in files for p in _rows(file, "id", ids)}
    return {i: by_id[i] for i in ids}


def _rows(file: Path, key: str, ids: list[str]) -> list[dict]:
    """The rows of a table whose `key` is one of `ids`."""
    return pq.read_table(file, filters=[(key, "in", ids)]).to_pylist() if ids else []


def eval_journeys(run_dir: Path, r: int | None = None, name: str = "heldout", prompt_ids: list[str] = (),
                  capability: str | None = None, failed: bool = False, regressed: bool = False,
                  num: int = 3) -> tuple[int, list[dict]]:
    """(round, one record per item of eval set `name`): the item, the round's samples with reward and reason,
    and {round: (samples scored, passing)} over every finished eval. Without prompt_ids: the first `num` item
    ids (sorted) of `capability`; `failed`: only items with no passing sample; `regressed`: only items that
    had one in the round before (and have none now)."""
    run, r = _open(run_dir, r, "eval")
    ev = _stage(run, r, "eval")
    prompts_file = _eval_prompts(run, ev, name)
    rows = {k: pq.read_table(run.stage_dir(k, "eval") / "evals.parquet", filters=[("benchmark", "=", name)])
            .to_pylist() for k in finished(run, "eval") if k <= r}
    history = {k: per_item(v) for k, v in rows.items()}  # as eval/metrics.py counts a pass: reward >= 1
    before = history.get(r - 1, {})
    now = history[r]

    def wanted(i: str) -> bool:
        passes, passed = now.get(i, (0, 0))[1] > 0, before.get(i, (0, 0))[1] > 0
        return passed and not passes if regressed else not (failed and passes)

    prompts = _pick([prompts_file], prompt_ids, capability, wanted, num, f"eval set {name}")
    return r, [{"prompt": p, "set": name,
                "samples": sorted((x for x in rows[r] if x["prompt_id"] == i), key=lambda x: x["sample_index"]),
                "history": {k: h[i] for k, h in history.items() if i in h}} for i, p in prompts.items()]


def _eval_prompts(run: RunDir, ev: StageOutput, name: str) -> Path:
    """Eval set `name`'s prompt file, from the eval stage's inputs: the held-out file or the benchmarks stage."""
    for path in (run.root / in_run(p) for p in ev.manifest["inputs"]):
        if name == "heldout" and path.name == "heldout.parquet":
            return path
        if name != "heldout" and (path / f"{name}.parquet").is_file():
            return path / f"{name}.parquet"
    scored = sorted(ev.manifest["results"].get("scores", {}))
    raise RunDirError(f"{ev.path}: round {ev.manifest['round']}'s eval has no set {name!r} (it has: {scored})")


def _ranked(samples: list[dict], capability: str, select: StageOutput, seed: int) -> list[dict]:
    """A prompt's samples best first, ranked as the select stage ranked them (its config, the run's seed);
    the samples it left out (no applicable or a non-finite score) last, in index order."""
    cfg = select.manifest["config"]
    weight = cfg["rm_weight"]
    weight = weight.get(capability, 0.0) if isinstance(weight, dict) else weight
    ranked = rank(samples, seed, weight, cfg["select"]["pass_threshold"])
    ids = {s["sample_index"] for s in ranked}
    return ranked + sorted((s for s in samples if s["sample_index"] not in ids), key=lambda s: s["sample_index"])


def _mix_verdicts(mix: StageOutput) -> dict[str, dict[str, str]]:
    """{table: {example id: "kept" / "kept xN" / "decontaminated: <eval item>"}} for the mix's SFT and pairs;
    an id absent from both was dropped by dedup or rebalancing (the mix stage's results count each)."""
    verdicts: dict[str, dict[str, str]] = {"sft": {}, "pairs": {}}
    for table in ("sft", "pairs"):
        copies = Counter(REPEAT.sub("", i) for i in pq.read_table(mix.path / f"{table}.parquet", columns=["id"])
                         .column("id").to_pylist())
        verdicts[table] = {i: "kept" if n == 1 else f"kept x{n}" for i, n in copies.items()}
    removed = mix.path / "decontaminated.parquet"
    if removed.is_file():
        for row in pq.read_table(removed).to_pylist():
            verdicts["pairs" if row["table"] == "pairs" else "sft"][row["id"]] = f"decontaminated: {row['eval_id']}"
    return verdicts


def render(r: int, journey: dict, width: int = 160) -> str:
    """One prompt's record as text; completions cut to `width` characters (0: whole)."""
    p = journey["prompt"]
    lines = [f"== round {r}  {p['id']}  ({p['capability']})", *_prompt_lines(p, width)]
    bar = journey["pass_threshold"]
    n_pass = sum(1 for s in journey["samples"] if s["reward"] is not None and s["reward"] >= bar)
    lines.append(f"-- {len(journey['samples'])} samples, {n_pass} passing (reward >= {bar:g}); best first:")
    for s in journey["samples"]:
        rm = "" if s["rm_score"] is None else f"  rm {s['rm_score']:+.2f}"
        lines += _sample_lines(s, width, rm, f"  [{', '.join(s['went'])}]" if s["went"] else "")
    if journey["mix"] is not None:
        for table, made in (("sft", journey["sft"]), ("pairs", journey["pair"])):
            name = "SFT example" if table == "sft" else "DPO pair"
            verdict = journey["mix"][table] or "dropped (dedup or rebalancing)"
            lines.append(f"-- {name}: " + (f"in the round's mix: {verdict}" if made else "none selected"))
    return "\n".join(lines)


def render_eval(r: int, journey: dict, width: int = 160) -> str:
    """One eval item's record as text: the item, its passing samples per round, this round's samples."""
    p = journey["prompt"]
    lines = [f"== round {r}  eval {journey['set']}  {p['id']}  ({p['capability']})", *_prompt_lines(p, width)]
    lines.append("-- passing samples by round: " + "  ".join(
        f"{k}: {c}/{n}" for k, (n, c) in sorted(journey["history"].items())))
    for s in journey["samples"]:
        lines += _sample_lines(s, width)
    return "\n".join(lines)


def _sample_lines(s: dict, width: int, score: str = "", marks: str = "") -> list[str]:
    """A sample's index, reward (and `score`, the RM's), the verifier's reason, `marks`; then its completion."""
    reward = "n/a" if s["reward"] is None else f"{s['reward']:.2f}"
    return [f"   #{s['sample_index']:<3} reward {reward}{score}  {s['reason'] or ''}{marks}",
            f"        {_cut(s['completion'], width)}"]


def _prompt_lines(p: dict, width: int) -> list[str]:
    """A prompt's messages (each cut to 8 lines) and the verifier metadata it carries."""
    lines = []
    for m in p["messages"]:
        lines += textwrap.indent(m["content"], f"   {m['role']}: ").splitlines()[:8]
    return lines + [f"   {key}: {_cut(p[key], width)}" for key in META if p.get(key)]


def _cut(text: str, width: int) -> str:
    flat = text.replace("\\", "\\\\").replace("\n", "\\n")  # one line: a newline shows as \n
    return flat if not width or len(flat) <= width else flat[: width - 3] + "..."
