"""`posttrain show RUN_DIR`: what one round did with a prompt, read from the run directory's tables.

For each prompt: its messages and verifier metadata, then every sample it got, best first as the select
stage ranked them (selection.rank with the stage's config), with the verifier's reason, and where each
went: the SFT example, the DPO chosen and rejected, and whether the round's mix kept the SFT example and the
pair (and how often the rebalancing repeats it) or dropped them (decontamination names the eval item).

The tables are found by id through the select stage's manifest (the scored table it ranked, the prompt file
it read), never by position; a sample is marked by its text, since the SFT example and the pair hold text.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from posttrain.rundir import RunDir, RunDirError, StageOutput, in_run
from posttrain.selection import rank

META = ("answer", "entry_point", "tests", "expected_call", "language")  # shown under the prompt when set


def last_round(run: RunDir) -> int:
    """The newest round whose select stage finished."""
    done = [int(p.parents[1].name.removeprefix("round_")) for p in run.root.glob("round_*/select/manifest.json")]
    if not done:
        raise RunDirError(f"{run.root}: no round has finished its select stage yet")
    return max(done)


def _stage(run: RunDir, r: int, name: str) -> StageOutput:
    out = run.completed(r, name)
    if out is None:
        raise RunDirError(f"{run.stage_dir(r, name)}: round {r} has not finished its {name} stage")
    return out


def _inputs(run: RunDir, select: StageOutput) -> tuple[Path, Path]:
    """(the scored table the select stage ranked, the prompt file it read), from its manifest's inputs."""
    paths = [run.root / in_run(p) for p in select.manifest["inputs"]]
    scored = next((p / "scored.parquet" for p in paths if (p / "scored.parquet").is_file()), None)
    prompts = next((p for p in paths if p.suffix == ".parquet" and p.parent.name == "prompts"), None)
    if scored is None or prompts is None:
        raise RunDirError(f"{select.path}/manifest.json: names no scored table or prompt file among its inputs")
    return scored, prompts


def _where(rows: list[dict], key: str, ids: set[str]) -> list[dict]:
    return [row for row in rows if row[key] in ids]


def _text(messages: list[dict]) -> str:
    return messages[-1]["content"]


def journeys(run_dir: Path, r: int | None = None, prompt_ids: list[str] = (), capability: str | None = None,
             failed: bool = False, num: int = 3) -> tuple[int, list[dict]]:
    """(round, one record per prompt): the prompt, its samples best first with what became of each, and
    the mix's verdict on its SFT example and pair. Without prompt_ids: the first `num` prompt ids (sorted)
    of `capability` (any if None), only those that got no SFT example when `failed`."""
    if not (Path(run_dir) / "run.json").is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no run.json)")
    run = RunDir(run_dir, dry_run=True)  # reads only
    r = last_round(run) if r is None else r
    select = _stage(run, r, "select")
    scored_file, prompts_file = _inputs(run, select)
    seed = json.loads((run.root / "recipe.json").read_text())["seed"]
    prompts = {p["id"]: p for p in pq.read_table(prompts_file).to_pylist()}
    sft = {row["prompt_id"]: row for row in pq.read_table(select.path / "sft.parquet").to_pylist()}
    pairs = {row["prompt_id"]: row for row in pq.read_table(select.path / "pairs.parquet").to_pylist()}
    unknown = [i for i in prompt_ids if i not in prompts]
    if unknown:
        raise RunDirError(f"{prompts_file}: no prompt {unknown[0]!r} among round {r}'s {len(prompts)} prompts")
    ids = list(prompt_ids) or [i for i in sorted(prompts) if (capability is None or prompts[i]["capability"] ==
                                                              capability) and not (failed and i in sft)][:num]
    scored = _where(pq.read_table(scored_file).to_pylist(), "prompt_id", set(ids))
    mix = run.completed(r, "mix")
    kept = _mix_verdicts(mix, r) if mix else None
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


def _ranked(samples: list[dict], capability: str, select: StageOutput, seed: int) -> list[dict]:
    """A prompt's samples best first, ranked as the select stage ranked them (its config, the run's seed);
    the samples it left out (no applicable or a non-finite score) last, in index order."""
    cfg = select.manifest["config"]
    weight = cfg["rm_weight"]
    weight = weight.get(capability, 0.0) if isinstance(weight, dict) else weight
    ranked = rank(samples, seed, weight, cfg["select"]["pass_threshold"])
    ids = {s["sample_index"] for s in ranked}
    return ranked + sorted((s for s in samples if s["sample_index"] not in ids), key=lambda s: s["sample_index"])


def _mix_verdicts(mix: StageOutput, r: int) -> dict[str, dict[str, str]]:
    """{table: {example id: "kept" / "kept xN" / "decontaminated: <eval item>"}} for the mix's SFT and pairs;
    an id absent from both was dropped by dedup or rebalancing (the mix stage's results count each)."""
    verdicts: dict[str, dict[str, str]] = {"sft": {}, "pairs": {}}
    for table in ("sft", "pairs"):
        copies = Counter(i.split("#")[0] for i in pq.read_table(mix.path / f"{table}.parquet", columns=["id"])
                         .column("id").to_pylist())
        verdicts[table] = {i: "kept" if n == 1 else f"kept x{n}" for i, n in copies.items()}
    removed = mix.path / "decontaminated.parquet"
    if removed.is_file():
        for row in pq.read_table(removed).to_pylist():
            verdicts["pairs" if row["table"] == "pairs" else "sft"][row["id"]] = f"decontaminated: {row['eval_id']}"
    return verdicts


def render(r: int, journey: dict, width: int = 160) -> str:
    """One prompt's record as text; completions cut to `width` characters (0: whole)."""
    p, lines = journey["prompt"], []
    lines.append(f"== round {r}  {p['id']}  ({p['capability']})")
    for m in p["messages"]:
        lines += textwrap.indent(m["content"], f"   {m['role']}: ").splitlines()[:8]
    for key in META:
        if p.get(key):
            lines.append(f"   {key}: {_cut(p[key], width)}")
    bar = journey["pass_threshold"]
    n_pass = sum(1 for s in journey["samples"] if s["reward"] is not None and s["reward"] >= bar)
    lines.append(f"-- {len(journey['samples'])} samples, {n_pass} passing (reward >= {bar:g}); best first:")
    for s in journey["samples"]:
        reward = "n/a" if s["reward"] is None else f"{s['reward']:.2f}"
        rm = "" if s["rm_score"] is None else f"  rm {s['rm_score']:+.2f}"
        went = f"  [{', '.join(s['went'])}]" if s["went"] else ""
        lines.append(f"   #{s['sample_index']:<3} reward {reward}{rm}  {s['reason'] or ''}{went}")
        lines.append(f"        {_cut(s['completion'], width)}")
    if journey["mix"] is not None:
        for table, made in (("sft", journey["sft"]), ("pairs", journey["pair"])):
            name = "SFT example" if table == "sft" else "DPO pair"
            verdict = journey["mix"][table] or "dropped (dedup or rebalancing)"
            lines.append(f"-- {name}: " + (f"in the round's mix: {verdict}" if made else "none selected"))
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    flat = text.replace("\\", "\\\\").replace("\n", "\\n")  # one line: a newline shows as \n
    return flat if not width or len(flat) <= width else flat[: width - 3] + "..."
