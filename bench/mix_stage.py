"""Benchmark of the mix stage: exact + MinHash dedup, decontamination and rebalancing on synthetic SFT data.

    .venv/bin/python bench/mix_stage.py --n 1000000        # goal (issue 4): within 60 s and 4 GB peak on 2 cores

Generates N SFT examples (prompts of 8-60 Zipf-distributed words; 5% exact copies differing in case and
whitespace, 5% one-word edits of prompts of 40+ words, 2% holding an eval prompt; capabilities 55/25/15/5)
plus 10,000 eval prompts and N/10 DPO pairs, as Parquet. Then, each in a fresh process so peak RSS is its own:

  fast   data_mix.mix.mix() on all N: read the Parquet inputs, the four steps, write the outputs;
  plain  the same steps as pure-Python loops over dicts and sets (MinHash via datasketch's MinHash and
         MinHashLSH, the library's per-document API) on a subsample of --plain-n rows, extrapolated
         linearly to N (its eval n-gram index is a fixed cost, timed apart and not scaled);
  check  the fast path on that same subsample, whose counts are printed beside the plain ones;
  semantic  tagging and semantic dedup (issue 4) on the first --semantic-n rows: embedding (all-MiniLM-L6-v2
         on CPU), tagging without the embedding, semantic dedup given the embeddings (k-means clusters of
         ~2000, greedy by quality x difficulty), and as its baseline the same greedy over one cluster (every
         pair compared), whose dups are the exact answer the clustered run's recall is measured against.
         Run twice: on the synthetic prompts (made-up words of ~4 word pieces each, up to the model's 256-piece
         limit: the slow case) and on --semantic-n tiny-world prompts (short English: the common case).
  scale  semantic dedup alone on --scale-n random unit vectors (384 dims, 5% planted near copies), so its
         cost at sizes the embedding step would take hours to reach shows: clustered vs every pair compared
         on a --scale-pairs-n subsample, extrapolated quadratically (greedy over one cluster is O(n^2)).

Generation also runs in its own process: Linux keeps a process's peak RSS across fork + exec, so a
child of a big parent would report the parent's peak.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


CAPS = ["math", "code", "tools", "multilingual"]
TARGETS = {c: 0.25 for c in CAPS}
MAX_REPEAT = 2
NUM_EVAL = 10_000


# --------------------------------------------------------------------------- synthetic data


def generate(n: int, seed: int, out: Path) -> dict:
    """Writes sft.parquet (n rows), heldout.parquet and pairs.parquet under `out`; returns what was planted."""
    from posttrain.run import schema

    rng = np.random.default_rng(seed)
    syl = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zu", "bo"]
    vocab = pa.array([f"{syl[i % 12]}{syl[i // 12 % 12]}{i // 144}" for i in range(30_000)])
    p = 1.0 / (np.arange(len(vocab)) + 10.0)
    p /= p.sum()

    def texts(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([[0], np.cumsum(lengths)]), rng.choice(len(vocab), int(lengths.sum()), p=p)

    def join(offsets: np.ndarray, codes: np.ndarray) -> pa.Array:
        return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), vocab.take(codes)), " ")

    def rows(offsets: np.ndarray, codes: np.ndarray, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lens = np.diff(offsets)[pick]
        start = np.repeat(offsets[:-1][pick] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return np.concatenate([[0], np.cumsum(lens)]), codes[start + np.arange(lens.sum())]

    n_exact, n_near, n_cont = int(n * 0.05), int(n * 0.05), int(n * 0.02)
    n_base = n - n_exact - n_near - n_cont
    base_off, base = texts(rng.integers(8, 61, n_base))
    eval_off, evals = texts(rng.integers(15, 31, NUM_EVAL))
    # near: a prompt of 40+ words with its middle word replaced
    long_rows = np.flatnonzero(np.diff(base_off) >= 40)
    near_off, near = rows(base_off, base, rng.choice(long_rows, n_near))
    mid = near_off[:-1] + np.diff(near_off) // 2
    near[mid] = (near[mid] + 1 + rng.integers(0, len(vocab) - 1, n_near)) % len(vocab)
    # contaminated: 5 words + an eval prompt + 5 words
    e_off, e = rows(eval_off, evals, rng.integers(0, NUM_EVAL, n_cont))
    pad_off, pad = texts(np.full(n_cont, 10))
    lens = np.diff(e_off) + 10
    cont_off = np.concatenate([[0], np.cumsum(lens)])
    cont = np.empty(cont_off[-1], np.int64)
    slot = np.arange(lens.sum()) - np.repeat(cont_off[:-1], lens)  # position within its row
    inner = (slot >= 5) & (slot < np.repeat(lens, lens) - 5)
    cont[inner], cont[~inner] = e, pad
    exact_src = rng.integers(0, n_base, n_exact)
    base_text = join(base_off, base)
    exact = pc.replace_substring(pc.utf8_upper(base_text.take(exact_src)), " ", "  ", max_replacements=1)
    user = pa.concat_arrays([base_text, exact, join(near_off, near), join(cont_off, cont)])
    order = rng.permutation(n)
    user = user.take(order)
    ids = pa.array(np.char.add(np.char.add("p", np.arange(n).astype("U8")), "/round1"))
    cap = pa.array(np.array(CAPS)[np.searchsorted(np.cumsum([0.55, 0.25, 0.15]), rng.random(n), side="right")])
    answer = join(*texts(np.full(n, 6)))

    msgs = _messages([user, answer], ["user", "assistant"])
    sft = pa.table({"id": ids, "prompt_id": pc.utf8_slice_codeunits(ids, 0, -7), "capability": cap,
                    "round": pa.array(rng.integers(1, 4, n), pa.int32()), "messages": msgs,
                    "reward": pa.array(np.ones(n))})
    pq.write_table(schema.validate(sft, "sft"), out / "sft.parquet")
    eval_text = join(eval_off, evals)
    heldout = pa.table({"id": pa.array([f"h{i:05d}" for i in range(NUM_EVAL)]),
                        "capability": pa.array(["math"] * NUM_EVAL),
                        "messages": _messages([eval_text], ["user"]),
                        **{f.name: pa.nulls(NUM_EVAL, pa.string()) for f in schema.META}})
    pq.write_table(schema.validate(heldout, "prompts"), out / "heldout.parquet")
    k = n // 10
    pairs = pa.table({"id": ids[:k], "prompt_id": sft["prompt_id"][:k], "capability": cap[:k],
                      "round": sft["round"][:k],
                      "prompt": _messages([user[:k]], ["user"]), "chosen": _messages([answer[:k]], ["assistant"]),
                      "rejected": _messages([answer[k:2 * k]], ["assistant"]),
                      "chosen_reward": np.ones(k), "rejected_reward": np.zeros(k)})
    pq.write_table(schema.validate(pairs, "pairs"), out / "pairs.parquet")
    return {"exact": n_exact, "near": n_near, "contaminated": n_cont, "eval_prompts": NUM_EVAL, "pairs": k}


def _messages(contents: list[pa.Array], roles: list[str]) -> pa.Array:
    """Per row i: [{role: roles[j], content: contents[j][i]} for j] as list<struct<role, content>>."""
    n, k = len(contents[0]), len(roles)
    content = pa.concat_arrays([c.cast(pa.string()) for c in contents]).take(
        (np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel())
    role = pa.array(np.tile(np.array(roles), n))
    flat = pa.StructArray.from_arrays([role, content], ["role", "content"])
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k), pa.int32()), flat)


# --------------------------------------------------------------------------- the two implementations


def run_fast(data: Path, rows: int | None) -> dict:
    from posttrain.stages.mix import mix
    from posttrain.recipe.config import MixConfig

    start = time.perf_counter()
    sft, heldout, pairs = (pq.read_table(data / f"{t}.parquet") for t in ("sft", "heldout", "pairs"))
    if rows is not None:  # a subsample: the first rows (rows are in random order) and a tenth as many pairs
        sft, pairs = sft.slice(0, rows), pairs.slice(0, rows // 10)
    with tempfile.TemporaryDirectory() as out:
        cfg = MixConfig(targets=TARGETS, max_repeat=MAX_REPEAT)
        counts = mix(Path(out), [sft], pairs, heldout, cfg, seed=0)
    return {"wall_s": time.perf_counter() - start, "counts": counts}


def run_plain(data: Path, rows: int) -> dict:
    """The same steps in plain Python over `rows` rows; per-row time measured apart from the eval index."""
    from datasketch import MinHash, MinHashLSH

    from data_mix.dedup import bands
    from data_mix.rebalance import quotas

    cfg_threshold, num_perm, n = 0.8, 64, 13
    sft = pq.read_table(data / "sft.parquet").slice(0, rows).to_pylist()
    heldout = pq.read_table(data / "heldout.parquet").to_pylist()
    pairs = pq.read_table(data / "pairs.parquet").slice(0, rows // 10).to_pylist()

    def text(messages: list[dict]) -> str:
        return " ".join(" ".join(m["content"] for m in messages if m["role"] != "assistant").lower().split())

    def grams(words: list[str]) -> list[tuple]:
        return [tuple(words)] if len(words) < n else [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]

    t0 = time.perf_counter()
    eval_index: dict[tuple, str] = {}
    for e in sorted(heldout, key=lambda e: e["id"]):
        for g in grams(text(e["messages"]).split()):
            eval_index.setdefault(g, e["id"])
    t_eval = time.perf_counter() - t0

    t0 = time.perf_counter()
    counts = {"exact_dups": 0, "near_dups": 0, "contaminated": 0, "contaminated_pairs": 0}
    seen, kept = set(), []
    for r in sorted(sft, key=lambda r: (r["round"], r["id"])):
        t = text(r["messages"])
        if t in seen:
            counts["exact_dups"] += 1
            continue
        seen.add(t)
        kept.append((r, t))
    b, rr = bands(cfg_threshold, num_perm)
    lsh, hashes, unique = MinHashLSH(num_perm=num_perm, params=(b, rr)), {}, []
    for r, t in kept:
        w = t.split()
        m = MinHash(num_perm=num_perm, seed=0)
        m.update_batch([" ".join(w[i:i + 3]).encode() for i in range(max(len(w) - 2, 1))])
        if any(m.jaccard(hashes[c]) >= cfg_threshold for c in lsh.query(m)):
            counts["near_dups"] += 1
            continue
        lsh.insert(r["id"], m)
        hashes[r["id"]] = m
        unique.append((r, t))
    clean = []
    for r, t in unique:
        if any(g in eval_index for g in grams(t.split())):
            counts["contaminated"] += 1
        else:
            clean.append(r)
    for p in pairs:
        counts["contaminated_pairs"] += any(g in eval_index for g in grams(text(p["prompt"]).split()))
    groups: dict[str, list[dict]] = {}
    for r in sorted(clean, key=lambda r: r["id"]):
        groups.setdefault(r["capability"], []).append(r)
    quota = quotas({c: len(g) for c, g in groups.items()}, TARGETS, MAX_REPEAT)
    out = []
    for cap, g in groups.items():
        q, rem = divmod(quota[cap], len(g))
        out += [{**r, "id": r["id"] + (f"#rep{m}" if m else "")} for m in range(q) for r in g]
        out += random.Random(f"0/{cap}").sample(g, rem)
    t_rows = time.perf_counter() - t0
    by_cap: dict[str, int] = {}
    for r in out:
        by_cap[r["capability"]] = by_cap.get(r["capability"], 0) + 1
    return {"eval_index_s": t_eval, "rows_s": t_rows, "rows": rows, "counts": {**counts, "sft": len(out),
            "by_capability": dict(sorted(by_cap.items()))}}


def tiny_sft(rows: int, seed: int = 0) -> pa.Table:
    """`rows` SFT examples of the tiny world (a quarter per capability), the reference reply as the answer."""
    from posttrain.run import schema
    from posttrain.tiny import world

    records = [{"id": f"{rec['id']}/round1", "prompt_id": rec["id"], "capability": cap, "round": 1, "reward": 1.0,
                "messages": rec["messages"] + [{"role": "assistant", "content": reply}]}
               for cap in CAPS for rec, reply in world.draw(cap, "train", rows // len(CAPS), seed)]
    return schema.from_records(records, "sft")


def run_semantic(data: Path, rows: int, source: str = "synthetic") -> dict:
    """Throughput of tagging and semantic dedup on `rows` rows, each step timed apart."""
    from data_mix import semantic, tagger
    from data_mix.embed import embed, load, model_path
    from data_mix.text import prompt_text
    from data_mix.topics import default_topics

    sft = pq.read_table(data / "sft.parquet").slice(0, rows) if source == "synthetic" else tiny_sft(rows)
    rows = sft.num_rows
    t0 = time.perf_counter()
    load(model_path())
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = embed(prompt_text(sft["messages"], user_only=True))
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    tags = tagger.tag(sft, emb, default_topics())
    t_tag = time.perf_counter() - t0
    quality = pc.index_in(tags["quality"], value_set=pa.array(tagger.QUALITY)).to_numpy(zero_copy_only=False)
    score = pa.table({"id": tags["id"], "score": (quality + 1) * tags["difficulty"].to_numpy()})
    t0 = time.perf_counter()
    dups = semantic.dedup(score, emb, 0.95, cluster_size=2000, seed=0)
    t_dedup = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = semantic.dedup(score, emb, 0.95, cluster_size=rows, seed=0)  # one cluster: every pair compared
    t_pairs = time.perf_counter() - t0
    found = set(dups["id"].to_pylist()) & set(exact["id"].to_pylist())
    return {"rows": rows, "load_s": t_load, "embed_s": t_embed, "tag_s": t_tag, "dedup_s": t_dedup,
            "all_pairs_s": t_pairs, "semantic_dups": dups.num_rows, "all_pairs_dups": exact.num_rows,
            "recall": len(found) / max(exact.num_rows, 1), "topics": dict(sorted(
                (v["values"], v["counts"]) for v in pc.value_counts(tags["topic"]).to_pylist()))}


def run_scale(data: Path, rows: int, pairs_rows: int = 10_000) -> dict:
    """Semantic dedup on random unit vectors with planted copies: clustered on `rows`, all pairs on a subsample."""
    from data_mix import semantic

    rng = np.random.default_rng(0)
    copies = rows // 20
    emb = rng.standard_normal((rows, 384)).astype(np.float32)
    emb[rows - copies:] = emb[:copies] + 0.02 * rng.standard_normal((copies, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    order = rng.permutation(rows)
    emb = emb[order]
    table = pa.table({"id": pa.array([f"r{i:08d}" for i in range(rows)]),
                      "score": pa.array(rng.integers(1, 10, rows).astype(np.float64))})
    t0 = time.perf_counter()
    dups = semantic.dedup(table, emb, 0.95, cluster_size=2000, seed=0)
    t_dedup = time.perf_counter() - t0
    m = min(pairs_rows, rows)
    t0 = time.perf_counter()
    semantic.dedup(table.slice(0, m), emb[:m], 0.95, cluster_size=m, seed=0)
    t_pairs = time.perf_counter() - t0
    return {"rows": rows, "planted": copies, "dedup_s": t_dedup, "semantic_dups": dups.num_rows,
            "pairs_rows": m, "pairs_s": t_pairs, "pairs_extrapolated_s": t_pairs * (rows / m) ** 2}


# --------------------------------------------------------------------------- driver


def child(args: list[str]) -> dict:
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(f"{args}: failed\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic SFT examples")
    ap.add_argument("--plain-n", type=int, default=20_000, help="rows for the plain-Python run (extrapolated)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--semantic-n", type=int, default=2_000, help="rows for tagging + semantic dedup (0: skip)")
    ap.add_argument("--scale-n", type=int, default=200_000, help="random vectors for semantic dedup alone (0: skip)")
    ap.add_argument("--scale-pairs-n", type=int, default=10_000, help="subsample for the all-pairs baseline")
    # gen|fast|plain|semantic|semantic-tiny|scale DATA_DIR ROWS
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        kind, data, rows = args._child
        if kind == "gen":
            start = time.perf_counter()
            res = {"planted": generate(int(rows), args.seed, Path(data)), "wall_s": time.perf_counter() - start}
        else:
            run = {"fast": run_fast, "plain": run_plain, "semantic": run_semantic,
                   "semantic-tiny": lambda d, r: run_semantic(d, r, "tiny"),
                   "scale": lambda d, r: run_scale(d, r, args.scale_pairs_n)}[kind]
            res = run(Path(data), int(rows) if rows != "all" else None)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        gen = child(["--_child", "gen", str(data), str(args.n), "--seed", str(args.seed)])
        print(f"generated {args.n:,} SFT rows in {gen['wall_s']:.1f} s; planted {gen['planted']}")
        m = min(args.plain_n, args.n)
        fast = child(["--_child", "fast", str(data), "all"])
        check = child(["--_child", "fast", str(data), str(m)])
        plain = child(["--_child", "plain", str(data), str(m)])
        k = str(min(args.semantic_n, args.n))
        sems = {"synthetic": child(["--_child", "semantic", str(data), k]),
                "tiny": child(["--_child", "semantic-tiny", str(data), k])} if args.semantic_n else {}
        scale = child(["--_child", "scale", str(data), str(args.scale_n), "--scale-pairs-n", str(args.scale_pairs_n)]) \
            if args.scale_n else None
    plain_est = plain["eval_index_s"] + plain["rows_s"] * args.n / m
    print(f"fast:  {args.n:,} rows in {fast['wall_s']:.1f} s (read + 4 steps + write), "
          f"peak RSS {fast['peak_rss_mb']:,.0f} MB")
    print(f"       counts {fast['counts']}")
    print(f"plain: {m:,} rows in {plain['rows_s']:.1f} s + eval index {plain['eval_index_s']:.1f} s, "
          f"peak RSS {plain['peak_rss_mb']:,.0f} MB -> extrapolated to {args.n:,} rows: {plain_est:.0f} s")
    print(f"ratio: plain / fast = {plain_est / fast['wall_s']:.0f}x (plain extrapolated from {m:,} rows)")
    print(f"same {m:,} rows, fast:  {check['counts']}")
    print(f"same {m:,} rows, plain: {plain['counts']}")
    for source, sem in sems.items():
        k = sem["rows"]
        print(f"semantic, {source} prompts ({k:,} rows, CPU): embed {k / sem['embed_s']:,.0f} ex/s; "
              f"tag (no embed) {k / sem['tag_s']:,.0f} ex/s; "
              f"semantic dedup {k / sem['dedup_s']:,.0f} ex/s (all pairs {k / sem['all_pairs_s']:,.0f} ex/s); "
              f"tag + dedup incl. embedding {k / (sem['embed_s'] + sem['tag_s'] + sem['dedup_s']):,.0f} ex/s; "
              f"model load {sem['load_s']:.1f} s")
        print(f"          dups {sem['semantic_dups']:,} (all pairs {sem['all_pairs_dups']:,}, "
              f"recall {sem['recall']:.3f}); topics {sem['topics']}; peak RSS {sem['peak_rss_mb']:,.0f} MB")
    if scale:
        print(f"semantic dedup alone, {scale['rows']:,} random vectors ({scale['planted']:,} planted copies): "
              f"{scale['dedup_s']:.1f} s = {scale['rows'] / scale['dedup_s']:,.0f} ex/s, "
              f"{scale['semantic_dups']:,} dups, "
              f"peak RSS {scale['peak_rss_mb']:,.0f} MB; all pairs: {scale['pairs_rows']:,} rows in "
              f"{scale['pairs_s']:.1f} s -> {scale['pairs_extrapolated_s']:.0f} s extrapolated "
              f"({scale['pairs_extrapolated_s'] / scale['dedup_s']:.0f}x)")
    print(json.dumps({"n": args.n, "fast_wall_s": round(fast["wall_s"], 2),
                      "fast_peak_rss_mb": round(fast["peak_rss_mb"]),
                      "plain_rows": m, "plain_extrapolated_s": round(plain_est, 1),
                      "ratio": round(plain_est / fast["wall_s"], 1),
                      **{f"semantic_{source}": {"rows": sem["rows"], "embed_ex_s": round(sem["rows"] / sem["embed_s"]),
                                                 "tag_ex_s": round(sem["rows"] / sem["tag_s"]),
                                                 "dedup_ex_s": round(sem["rows"] / sem["dedup_s"]),
                                                 "recall": round(sem["recall"], 4)} for source, sem in sems.items()},
                      **({"scale_rows": scale["rows"], "scale_dedup_ex_s": round(scale["rows"] / scale["dedup_s"]),
                          "scale_all_pairs_extrapolated_s": round(scale["pairs_extrapolated_s"])} if scale else {})}))


if __name__ == "__main__":
    main()
