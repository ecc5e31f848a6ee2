"""Typed recipe: one dataclass per stage, loaded strictly from YAML.

A recipe says *what* to train; how to distribute it lives in an accelerate config. Every section is a
`kw_only` dataclass; unknown keys, wrong types and missing required fields are errors that name the
dotted key (and the recipe file), raised before any work starts. Value checks (ranges, keys that need
other keys, names and files that must exist) live in posttrain/recipe/checks.py.

The stages' sections live together here rather than each in its stage module: the training stages' modules
import torch and TRL (sft, dpo, reward_model: 6-7 s each), while every command loads its recipe first and
`--dry-run`, `show` and `doctor` need nothing more (0.3 s). The libraries below own theirs (data_mix: mix and
judge; reward: the sandbox), each with its checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# RecipeError is the recipe's error: callers import it from here, beside the sections it names.
from posttrain.recipe.strict_yaml import RecipeError as RecipeError
from data_mix.config import JUDGMENTS as JUDGMENTS  # the mix sections are data_mix's own
from data_mix.config import JudgeConfig as JudgeConfig
from data_mix.config import MixConfig as MixConfig
from reward.sandbox import SandboxConfig

CAPABILITIES = ("math", "code", "tools", "multilingual")


# --------------------------------------------------------------------------- sections


TINY_BASE_MARKER = "posttrain_base.json"  # in a tiny base's folder: how it was built (a folder without one is not ours)


def may_build_tiny_base_in(path: Path) -> bool:
    """Whether the tiny base may be built at `path` (replacing what is there): nothing there yet, an empty
    folder, or a tiny base built before (it holds TINY_BASE_MARKER). Never a model of the user's."""
    if not path.exists():
        return True
    return path.is_dir() and ((path / TINY_BASE_MARKER).is_file() or not any(path.iterdir()))


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
    # hf: a hub commit, tag or branch to read. Pin a commit: a hub dataset that changes under an unpinned
    # name does not redo the prompts stage (a local dataset folder's files are hashed instead).
    hf_revision: str | None = None
    capabilities: list[str] = field(default_factory=lambda: list(CAPABILITIES))  # tiny / file / hf: kept ones
    num_train: int = 0  # tiny: prompts per capability; generator: prompts in all
    num_heldout: int = 0  # tiny: prompts per capability; generator: prompts in all
    # tiny / generator: num_train new training prompts in every round (Llama 3 §4.1.6 collects new prompts each
    # round) instead of the same ones asked again; the held-out prompts stay the same
    per_round: bool = False


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
    # Samples per engine call (per rank) in generate, revise and eval (each benchmark set apart); each call's
    # results are kept in the stage's temp folder as it finishes, so a killed run redoes only the chunk it was
    # in. Large enough that vLLM's batch stays full through a chunk and every shipped recipe samples in one
    # (their tables stay as they were).
    chunk_samples: int = 65536


@dataclass(kw_only=True)
class ScoreConfig:
    """Which verifier scores each capability, and the code sandbox's limits."""

    verifiers: dict[str, str] = field(default_factory=lambda: {c: c for c in CAPABILITIES})
    # Capabilities whose passing samples fail when an arithmetic equation they state is false ("5 + 8 = 14.
    # The answer is 13."): Llama 3 §4.3.3 filters training traces with wrong steps. Training data only: eval
    # grades final answers, as the benchmarks do.
    check_steps: list[str] = field(default_factory=list)
    code_timeout_s: float = 5.0
    num_workers: int = 2
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)  # isolation: the weakest allowed (default bwrap)


@dataclass(kw_only=True)
class ReviseConfig:
    """Execution feedback (Llama 3 §4.3.1): a prompt of `capabilities` none of whose samples passed gets its
    best failing sample back with the verifier's reason and `samples` more tries, scored like the others."""

    enabled: bool = False
    capabilities: list[str] = field(default_factory=lambda: ["code"])
    samples: int = 2  # revisions per failed prompt
    # The user turn after the failing answer; {reason} is the verifier's (first failing test, exception, timeout).
    feedback: str = ("Running your code against the tests failed: {reason}\n"
                     "Fix the code and reply with the complete corrected solution.")


@dataclass(kw_only=True)
class SelectConfig:
    """Rejection sampling: best passing sample -> SFT; best vs worst with enough margin -> DPO pair.

    A sample cut at generate.max_tokens (finish_reason "length"; none recorded = not truncated) is by default
    never an SFT example or a DPO chosen: the chat template would end it with the end-of-turn token and teach
    stopping mid-sentence (Llama 3 §4.2.3). It may still be a DPO rejected: a reply that never ends is a fine
    negative, and its appended end-of-turn token only pushes down the abrupt ending too."""

    pass_threshold: float = 1.0  # a sample "passes" when its reward is at least this
    min_margin: float = 0.5  # chosen reward - rejected reward needed for a DPO pair
    chosen_must_pass: bool = True  # a DPO chosen response must pass its verifier (matters once an RM adds to scores)
    keep_truncated: bool = False  # true: a sample cut at max_tokens may be an SFT example or a DPO chosen too


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
class TrainerConfig:
    """How a training stage (sft, dpo, reward_model) runs its trainer, beside what it trains on: kernels,
    activation checkpointing, checkpoints, LoRA, and the variants it averages."""

    gradient_checkpointing: bool = True  # TRL's default: recompute activations in backward (less memory, slower)
    use_liger_kernel: bool = False  # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU); needs liger-kernel and a GPU
    torch_compile: bool = False  # torch.compile the model (the first steps pay the compile time)
    # The model's attention kernel: None keeps its default (sdpa); "flash_attention_2" needs flash-attn on a GPU
    attn_implementation: str | None = None
    checkpoint_every_steps: int = 50
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # Llama 3 §4.1.5: one model per entry (this section's keys to change, and/or `seed`), each trained
    # from the same input, then parameter-averaged into the stage's model (posttrain/training/variants.py).
    variants: list[dict[str, Any]] = field(default_factory=list)
    variant_weights: list[float] | None = None  # one per variant; None = uniform


@dataclass(kw_only=True)
class SFTConfig(TrainerConfig):
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
    # tokens with position ids restarting per conversation, so none attends to another (posttrain.stages.sft:
    # rows kept apart under sdpa/eager, one flattened row under flash attention; tests/test_fast_paths.py).
    # batch_size then counts packed rows, so a step sees more conversations than without packing.
    packing: bool = False


@dataclass(kw_only=True)
class DPOConfig(TrainerConfig):
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
    # The batch's chosen and rejected sequences packed into as few rows as fit (rows as wide as its longest
    # sequence, position ids restarting per sequence so none attends to another): no compute on padding.
    # Loss and gradients equal the padded batch's (posttrain/training/dpo_packing.py, tests/test_dpo_packing.py).
    padding_free: bool = False
    # With padding_free: a pair's rejected sequence attends to the prompt (and any further tokens) it shares
    # with its chosen one in the chosen's row instead of recomputing them; needs sdpa or eager attention.
    share_prefix: bool = False


@dataclass(kw_only=True)
class RewardModelConfig(TrainerConfig):
    """A Bradley-Terry reward model (TRL RewardTrainer) trained each round on verifier outcomes.

    Initialised from the pretrained base, as the paper does; pairs are a passing vs a failing sample of
    the same prompt. `weight` is how much the RM score adds to a verifier reward when ranking samples: one
    number for every capability, or per capability ({code: 0.1, math: 0}; a capability left out: 0), since
    an RM that ranks one capability's answers well may only add noise to another's. `lora` puts adapters on
    the sequence classifier, its new score head trained in full beside them (no quantize_4bit: QLoRA is not
    supported for the RM).
    """

    enabled: bool = False
    learning_rate: float = 1e-4
    num_epochs: float = 1.0
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 256  # pairs with a longer chosen or rejected sequence are dropped from training
    score_batch_size: int = 64
    weight: float | dict[str, float] = 0.0  # 0 = RM score recorded only
    # Pairs of this fraction of the prompts are held out of training; the model's pairwise accuracy on them
    # (chosen scored above rejected; 50% = chance) is in the stage's results and the report. 0: train on all.
    eval_fraction: float = 0.1
    # JSONL preference files ({"prompt", "ranking": [best, ..., worst]} or {"prompt", "chosen", "rejected",
    # "edited"?}) trained on beside the verifier pairs of every round so far (the paper's accumulated data).
    preference_sources: list[str] = field(default_factory=list)

    def weights(self) -> dict[str, float]:
        """The RM's weight in ranking each capability's samples."""
        if isinstance(self.weight, dict):
            return {c: self.weight.get(c, 0.0) for c in CAPABILITIES}
        return dict.fromkeys(CAPABILITIES, self.weight)


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
class TrackingConfig:
    """Where the trainers' metrics go besides each trained stage's log_history.json (the report plots those).

    report_to: transformers' experiment trackers (tensorboard, wandb, trackio, mlflow, ...; each is its own
    package). Each trained stage is a run named "<recipe name>/round_<r>/<stage>" (`posttrain reward train`:
    "<recipe name>/reward_model"); TensorBoard's event files are kept in the stage's folder (tensorboard/).
    Not in any stage's fingerprint: adding a tracker to a run redoes nothing.
    """

    report_to: list[str] = field(default_factory=list)
    project: str | None = None  # the tracker's project (wandb, trackio, ...); None = the recipe's name


def tracking_args(tracking, name: str, stage: str, round_: int | None = None) -> dict:
    """TRL config fields that send a trained stage's metrics to the recipe's trackers ({} without any):
    one tracker run per stage and round (`round_` None: a stage trained outside the rounds)."""
    if not tracking.report_to:
        return {}
    run_name = f"{name}/{stage}" if round_ is None else f"{name}/round_{round_}/{stage}"
    return {"report_to": list(tracking.report_to), "run_name": run_name, "project": tracking.project or name}


@dataclass(kw_only=True)
class HubConfig:
    """Pushing to the Hugging Face Hub (posttrain/publish/hub.py); the token comes from `hf auth login` or HF_TOKEN.

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
    base_model: str  # local folder, hub id, or .gguf file (posttrain.models.gguf_import; pkg://<package>/<file>)
    # Variables every render of the model's chat template gets (generation, eval, SFT, DPO, the reward model), so
    # prompts are sampled and trained the same way: e.g. {enable_thinking: false} for Qwen3's template.
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    rounds: int
    seed: int = 0
    output_dir: str = "runs"
    base: BaseBuildConfig | None = None
    prompts: PromptsConfig
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    revise: ReviseConfig = field(default_factory=ReviseConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
