"""The report's plots (matplotlib, Agg): one function per PNG, each returning whether it drew anything.

`reward_distributions` and `training_curves` read what the summary does not carry: each round's scored
samples and each trained stage's log history.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from posttrain.reporting.summary import STAGES, TRAINED_STAGES, headline


def _figure(ncols: int = 1, width: float = 6.4, nrows: int | None = None):
    """(pyplot, figure, axes): one row of `ncols` panels, or with `nrows` the [nrows][ncols] grid."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training node
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows or 1, ncols, figsize=(width * ncols, 4 * (nrows or 1)), squeeze=False)
    return plt, fig, axes if nrows else axes[0]


def _save(plt, fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_eval(summary: dict, path: Path) -> bool:
    rounds = [r for r in summary["rounds"] if r["eval"]]
    if not rounds:
        return False
    plt, fig, (ax,) = _figure(width=8)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rounds:
        for name, value in headline(r["eval"]).items():
            series[name].append((r["round"], value))
    for name, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, [100 * y for y in ys], marker="o", label=name,
                linewidth=3 if name.endswith("overall") else 1.5)
    ax.set(xlabel="round (0 = base)", ylabel="% correct (held-out accuracy / pass@1)", title="Eval per round",
           ylim=(0, 100))
    ax.set_xticks([r["round"] for r in rounds])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(plt, fig, path)


def reward_distributions(run_dir: Path, summary: dict) -> dict[str, dict[int, dict[str, list[float]]]]:
    """{"pass_rate" | "rm_score": {round: {capability: values}}} from each round's scored samples."""
    out: dict[str, dict[int, dict[str, list[float]]]] = {"pass_rate": {}, "rm_score": {}}
    for r in summary["rounds"][1:]:
        # What select ranked: the RM's table, else the revised one, else the score stage's (stale folders of
        # stages the recipe switched off are not in the summary).
        stage = "reward_model" if r.get("reward_model") else "revise" if r.get("revise") else "score"
        path = run_dir / f"round_{r['round']}" / stage / "scored.parquet"
        if not path.exists():
            continue
        rows = pq.read_table(path, columns=["prompt_id", "capability", "reward", "rm_score"]).to_pylist()
        threshold = r.get("pass_threshold") or 1.0  # the score stage's, as select used it
        per_prompt: dict[tuple[str, str], list[float]] = defaultdict(list)
        rm: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            if row["reward"] is not None:
                per_prompt[(row["capability"], row["prompt_id"])].append(row["reward"] >= threshold)
            if row["rm_score"] is not None:
                rm[row["capability"]].append(row["rm_score"])
        rates: dict[str, list[float]] = defaultdict(list)
        for (cap, _), passes in per_prompt.items():
            rates[cap].append(sum(passes) / len(passes))
        out["pass_rate"][r["round"]] = dict(rates)
        if rm:
            out["rm_score"][r["round"]] = dict(rm)
    return out


def plot_rewards(dist: dict, path: Path) -> bool:
    caps = sorted({c for by_cap in dist["pass_rate"].values() for c in by_cap})
    if not caps:
        return False
    kinds = [k for k in ("pass_rate", "rm_score") if dist[k]]
    width = max(3.6, 7.0 / len(caps))
    plt, fig, axes = _figure(ncols=len(caps), width=width)
    if len(kinds) > 1:
        plt.close(fig)
        fig, grid = plt.subplots(2, len(caps), figsize=(width * len(caps), 7), squeeze=False)
    else:
        grid = [axes]
    for row, kind in zip(grid, kinds):
        for ax, cap in zip(row, caps):
            data = {r: by_cap.get(cap, []) for r, by_cap in dist[kind].items()}
            data = {r: v for r, v in data.items() if v}
            if not data:
                ax.set_visible(False)
                continue
            ax.hist(list(data.values()), bins=10 if kind == "pass_rate" else 20, label=[f"round {r}" for r in data],
                    range=(0, 1) if kind == "pass_rate" else None)
            ax.set(title=cap, xlabel="prompt pass rate over K samples" if kind == "pass_rate" else "RM score",
                   ylabel="prompts" if kind == "pass_rate" else "samples")
            ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_selection(summary: dict, path: Path) -> bool:
    rounds = [r for r in summary["rounds"][1:] if r["pass_rate"] is not None]
    if not rounds:
        return False
    plt, fig, (ax,) = _figure()
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [100 * r["pass_rate"] for r in rounds], marker="o", label="samples passing")
    ax.plot(xs, [100 * (r["sft_examples"] or 0) / max(1, r["prompts"] or 0) for r in rounds], marker="s",
            label="prompts kept for SFT (a passing sample)")
    ax.plot(xs, [100 * (r["dpo_pairs"] or 0) / max(1, r["prompts"] or 0) for r in rounds], marker="^",
            label="prompts giving a DPO pair")
    ax.set(xlabel="round", ylabel="%", title="Rejection sampling", ylim=(0, 100))
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_mix(summary: dict, targets: dict[str, float] | None, path: Path) -> bool:
    """Per round and capability: SFT examples selected so far, left after dedup + decontamination, and
    in the final mix after rebalancing, with each target's share of the final mix as a tick."""
    rounds = [r for r in summary["rounds"][1:] if r["mix"] and r["mix"].get("by_capability") is not None]
    if not rounds:
        return False
    steps = (("input_by_capability", "selected"), ("before_rebalance", "deduplicated + decontaminated"),
             ("by_capability", "final mix"))
    caps = sorted({c for r in rounds for key, _ in steps for c in (r["mix"].get(key) or {})})
    plt, fig, axes = _figure(ncols=len(rounds), width=max(4.5, 9.0 / len(rounds)))
    for ax, r in zip(axes, rounds):
        width = 0.8 / len(steps)
        for j, (key, label) in enumerate(steps):
            counts = r["mix"].get(key) or {}
            ax.bar([k + (j - 1) * width for k in range(len(caps))], [counts.get(c, 0) for c in caps], width,
                   label=label)
        total = sum((r["mix"].get("by_capability") or {}).values())
        for k, cap in enumerate(caps):
            if targets and total:
                ax.hlines(targets.get(cap, 0) * total, k + 0.5 * width, k + 1.5 * width, colors="black",
                          linestyles="--", label="target share of the final mix" if k == 0 else None)
        removed = ", ".join(f"{name} {r['mix'].get(k) or 0}" for k, name in
                            (("exact_dups", "exact"), ("near_dups", "near"), ("contaminated", "leaked")))
        ax.set_xticks(range(len(caps)), caps)
        ax.set_ylabel("SFT examples")
        ax.set_title(f"round {r['round']}\nremoved: {removed}", fontsize=8)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(plt, fig, path)


def plot_tags(summary: dict, path: Path) -> bool:
    """A row per tagged round: its SFT examples by topic, quality, difficulty and complexity as selected, after
    dedup and decontamination, and after rebalancing (only when the mix stage tagged its data: `mix.tag` or an
    option that needs tags)."""
    tagged = [r for r in summary["rounds"][1:] if r["mix"] and (r["mix"].get("composition") or {}).get("after")]
    if not tagged:
        return False
    kinds = ("topic", "quality", "difficulty", "complexity")
    plt, fig, grid = _figure(ncols=len(kinds), width=3.6, nrows=len(tagged))
    for axes, r in zip(grid, tagged):
        _tag_row(axes, kinds, r["mix"]["composition"], r["round"])
    grid[0][-1].legend(fontsize=7)
    return _save(plt, fig, path)


def _tag_row(axes, kinds: tuple[str, ...], comp: dict, round_: int) -> None:
    """One round's bars per tag kind: each tag value's count at each counted step of the mix."""
    whens = [w for w in ("input", "before", "after") if w in comp]  # input: before dedup and decontamination
    labels = {"input": "selected", "before": "deduplicated + decontaminated", "after": "final mix"}
    width = 0.8 / len(whens)
    for ax, kind in zip(axes, kinds):
        keys = list(dict.fromkeys(x for w in whens for x in comp[w].get(kind, {})))
        for j, when in enumerate(whens):
            ax.bar([k + (j - (len(whens) - 1) / 2) * width for k in range(len(keys))],
                   [comp[when].get(kind, {}).get(x, 0) for x in keys], width, label=labels[when])
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{kind} (round {round_})", fontsize=9)
    axes[0].set_ylabel("SFT examples")


# (stage, metric in the trainer's log, axis label) for each panel of training.png
CURVES = (("sft", "loss", "SFT loss"), ("dpo", "loss", "DPO loss (sigmoid + NLL)"),
          ("dpo", "rewards/accuracies", "DPO reward accuracy"), ("reward_model", "loss", "reward model loss"))


def training_curves(run_dir: Path, summary: dict) -> dict[tuple[str, str], dict[int, list[tuple[int, float]]]]:
    """{(stage, metric): {round: [(step, value)]}} from each trained stage's log history (with variants,
    the first variant's)."""
    from posttrain.training.trainer import LOG_HISTORY  # torch: only when a report draws training curves

    out: dict[tuple[str, str], dict[int, list[tuple[int, float]]]] = defaultdict(dict)
    for r in summary["rounds"][1:]:
        for stage in TRAINED_STAGES:
            folder = Path(run_dir) / f"round_{r['round']}" / stage
            path = next((p for p in (folder / LOG_HISTORY, folder / "variants" / "0" / LOG_HISTORY) if p.is_file()),
                        None)
            if path is None:
                continue
            history = json.loads(path.read_text())
            for metric in (m for s, m, _ in CURVES if s == stage):
                points = [(e["step"], e[metric]) for e in history if metric in e and "step" in e]
                if points:
                    out[(stage, metric)][r["round"]] = points
    return dict(out)


def plot_training(curves: dict, path: Path) -> bool:
    panels = [(stage, metric, label) for stage, metric, label in CURVES if curves.get((stage, metric))]
    if not panels:
        return False
    plt, fig, axes = _figure(ncols=len(panels), width=4.2)
    for ax, (stage, metric, label) in zip(axes, panels):
        for r, points in sorted(curves[(stage, metric)].items()):
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=f"round {r}")
        ax.set(xlabel="optimizer step", title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_wall(summary: dict, path: Path) -> bool:
    rounds = [r for r in summary["rounds"] if r["wall_s"]]
    if not rounds:
        return False
    plt, fig, (ax,) = _figure(width=8)
    bottom = [0.0] * len(rounds)
    for stage in STAGES:
        values = [r["wall_s"].get(stage, 0.0) for r in rounds]
        if any(values):
            ax.bar([r["round"] for r in rounds], values, bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, values)]
    ax.set(xlabel="round (0 = base eval)", ylabel="seconds", title="Wall time per stage")
    ax.set_xticks([r["round"] for r in rounds])
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(plt, fig, path)
