"""The run summary: eval accuracy per round and what each round produced, as JSON and as a table."""

from __future__ import annotations

from posttrain.rundir import RunDir

STAGES = ("generate", "score", "select", "mix", "sft", "dpo", "eval")


def summarize(run: RunDir, rounds: int) -> dict:
    """Reads the manifests of rounds 0..rounds into {"rounds": [{round, accuracy, samples, ...}]}."""
    out = []
    for r in range(rounds + 1):
        m = {s: run.completed(r, s) for s in STAGES}
        rows = lambda s, key: (m[s].manifest["results"].get(key) if m[s] else None)  # noqa: E731
        out.append({
            "round": r,
            "accuracy": rows("eval", "accuracy") or {},
            "samples": rows("generate", "samples"),
            "pass_rate": rows("score", "pass_rate"),
            "sft_examples": rows("select", "sft"),
            "dpo_pairs": rows("select", "pairs"),
            "sft_mix": rows("mix", "sft"),
            "wall_s": {s: m[s].manifest["wall_s"] for s in STAGES if m[s]},
        })
    return {"run": str(run.root), "rounds": out}


def table(summary: dict) -> str:
    rounds = summary["rounds"]
    caps = sorted({c for r in rounds for c in r["accuracy"] if c != "overall"}) + ["overall"]
    fmt = lambda v: "-" if v is None else (f"{v:.1%}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["eval accuracy (greedy pass@1 on held-out prompts; round 0 = base)",
             "round  " + "  ".join(f"{c:>12}" for c in caps)]
    for r in rounds:
        lines.append(f"{r['round']:>5}  " + "  ".join(f"{fmt(r['accuracy'].get(c)):>12}" for c in caps))
    lines += ["", "round  samples  pass_rate  sft_new  sft_mix  dpo_pairs  wall time per stage (s)"]
    for r in rounds[1:]:
        wall = " ".join(f"{s}={t:.0f}" for s, t in r["wall_s"].items())
        lines.append(f"{r['round']:>5}  {fmt(r['samples']):>7}  {fmt(r['pass_rate']):>9}  {fmt(r['sft_examples']):>7}  "
                     f"{fmt(r['sft_mix']):>7}  {fmt(r['dpo_pairs']):>9}  {wall}")
    return "\n".join(lines)
