"""Value checks of a built recipe, run by `recipe.load.load_recipe` before any work starts.

Types are checked by `strict_yaml.build` as the YAML is converted into dataclasses; this module checks what
types alone cannot express (ranges, keys that need other keys, names that must exist, files that must
parse), raising a `RecipeError` that names the recipe file and the dotted recipe key.

"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from data_mix.checks import check_mix
from eval.benchmarks import BENCHMARKS
from posttrain.recipe.config import (
    CAPABILITIES,
    EvalConfig,
    GenerateConfig,
    HubConfig,
    PromptsConfig,
    Recipe,
    RecipeError,
    ReviseConfig,
    RewardModelConfig,
    ScoreConfig,
    TrackingConfig,
)
from posttrain.recipe.model_checks import Need, check_base_model, check_trainable
from posttrain.run.schema import SchemaError
from posttrain.stages.prompts import load_source
from posttrain.training.variants import variant
from reward import custom, sandbox, unknown_verifier
from posttrain.sources import GENERATORS



def check(r: Recipe, where: str) -> None:
    """Value checks that types alone cannot express.

    The calls run in a fixed order, which decides the error reported when a recipe has several.
    """

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise RecipeError(f"{where}: {key} {msg}")

    need(r.rounds >= 1, "rounds", f"must be >= 1, got {r.rounds}")
    _check_generate(r.generate, need)
    need(r.select.min_margin >= 0, "select.min_margin", "must be >= 0")
    _check_training(r, need)
    _check_reward_model(r.reward_model, need)
    check_mix(r.mix, need, CAPABILITIES)
    _check_variants(r, where, need)
    _check_sources(r.prompts, need)
    _check_generate_variety(r.generate, need)
    _check_eval(r.eval, need)
    check_base_model(r, need)
    _check_chat_template_kwargs(r.chat_template_kwargs, need)
    check_trainable(r, need)
    _check_score(r.score, need)
    _check_sandbox(r, need)
    _check_revise(r.revise, need)
    _check_hub(r.hub, need)
    _check_tracking(r.tracking, need)


# What apply_chat_template and the template's own context already name: a variable of the recipe's would
# clash with (or silently replace) them.
TEMPLATE_NAMES = frozenset({
    "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
    "continue_final_message", "tokenize", "padding", "truncation", "max_length", "return_tensors", "return_dict",
    "return_assistant_tokens_mask", "tokenizer_kwargs", "bos_token", "eos_token", "unk_token", "sep_token",
    "pad_token", "cls_token", "mask_token", "additional_special_tokens"})


def _check_chat_template_kwargs(kwargs: dict, need: Need) -> None:
    for name in kwargs:
        need(name.isidentifier(), f"chat_template_kwargs.{name}", "must be a template variable name (an identifier)")
        need(name not in TEMPLATE_NAMES, f"chat_template_kwargs.{name}",
             "is an argument of apply_chat_template or a variable every template already gets, not one to set here")


def _check_tracking(t: TrackingConfig, need: Need) -> None:
    """Trackers transformers knows, whose package is installed (else the first trainer would fail)."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for i, name in enumerate(t.report_to):
        need(name in INTEGRATION_TO_CALLBACK, f"tracking.report_to[{i}]",
             f"names unknown tracker {name!r} (known: {', '.join(sorted(INTEGRATION_TO_CALLBACK))})")
        need(name in get_available_reporting_integrations(), f"tracking.report_to[{i}]",
             f"{name!r} needs its package installed (e.g. pip install {name})")


def _check_generate(g: GenerateConfig, need: Need) -> None:
    need(g.num_samples >= 1, "generate.num_samples", f"must be >= 1, got {g.num_samples}")
    need(g.tensor_parallel_size >= 1, "generate.tensor_parallel_size",
         f"must be >= 1, got {g.tensor_parallel_size}")
    need(g.temperature >= 0, "generate.temperature", "must be >= 0")
    need(0 < g.top_p <= 1, "generate.top_p", "must be in (0, 1]")
    need(g.max_tokens >= 1, "generate.max_tokens", "must be >= 1")
    need(g.chunk_samples >= 1, "generate.chunk_samples", f"must be >= 1, got {g.chunk_samples}")
    need(g.kv_cache_gib >= 1, "generate.kv_cache_gib", f"must be >= 1 (whole GiB), got {g.kv_cache_gib}")
    need(0 < g.gpu_memory_utilization <= 1, "generate.gpu_memory_utilization",
         f"must be in (0, 1], got {g.gpu_memory_utilization}")
    need(g.max_model_len is None or g.max_model_len > g.max_tokens, "generate.max_model_len",
         f"must leave room for a prompt beside generate.max_tokens={g.max_tokens}, got {g.max_model_len}")


def _check_generate_variety(g: GenerateConfig, need: Need) -> None:
    """The keys that vary sampling (temperature range, steering system prompts); checked after the
    prompt sources, not with the rest of `generate`, so the first error reported stays the same."""
    if g.temperature_range is not None:
        need(len(g.temperature_range) == 2 and 0 <= g.temperature_range[0] <= g.temperature_range[1],
             "generate.temperature_range", f"must be [low, high] with 0 <= low <= high, got {g.temperature_range}")
    for cap in g.system_prompts:
        need(cap in CAPABILITIES, f"generate.system_prompts.{cap}", f"is not a known capability {CAPABILITIES}")


# transformers.SchedulerType's values (tests/test_config.py holds them equal). Importing it imports transformers'
# trainer, torch and peft (~5 s on 2 cores): a recipe error in a later section would wait for that.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")


def _check_training(r: Recipe, need: Need) -> None:
    """SFT and DPO: rates, then each stage's LoRA and optional kernel packages."""
    need(r.sft.learning_rate > 0, "sft.learning_rate", "must be > 0")
    need(r.dpo.beta > 0, "dpo.beta", "must be > 0")
    need(r.dpo.learning_rate > 0, "dpo.learning_rate", f"must be > 0, got {r.dpo.learning_rate}")
    need(r.dpo.nll_weight >= 0, "dpo.nll_weight", f"must be >= 0 (0 = no NLL term), got {r.dpo.nll_weight}")
    if r.dpo.share_prefix:
        from posttrain.training.dpo_packing import DENSE_MASK_ATTENTION  # torch: only for recipes that turn it on

        need(r.dpo.padding_free, "dpo.share_prefix", "needs dpo.padding_free: true")
        need(r.dpo.attn_implementation in (None, *DENSE_MASK_ATTENTION), "dpo.share_prefix",
             f"needs attention that takes a dense mask ({', '.join(DENSE_MASK_ATTENTION)}), "
             f"not dpo.attn_implementation {r.dpo.attn_implementation!r}")
    need(0 <= r.sft.warmup_ratio < 1, "sft.warmup_ratio", f"must be in [0, 1), got {r.sft.warmup_ratio}")
    need(r.sft.weight_decay >= 0, "sft.weight_decay", f"must be >= 0, got {r.sft.weight_decay}")
    # else a typo fails only when SFT starts, after generation
    need(r.sft.lr_scheduler_type in LR_SCHEDULERS, "sft.lr_scheduler_type",
         f"must be one of {', '.join(LR_SCHEDULERS)}; got {r.sft.lr_scheduler_type!r}")
    for stage in ("sft", "dpo"):
        cfg = getattr(r, stage)
        need(cfg.num_epochs > 0, f"{stage}.num_epochs", f"must be > 0, got {cfg.num_epochs}")
        for name in ("batch_size", "gradient_accumulation_steps", "max_length", "checkpoint_every_steps"):
            need(getattr(cfg, name) >= 1, f"{stage}.{name}", f"must be >= 1, got {getattr(cfg, name)}")
    for stage in ("sft", "dpo"):
        lora = getattr(r, stage).lora
        need(lora.r >= 0, f"{stage}.lora.r", f"must be >= 0 (0 = no LoRA), got {lora.r}")
        need(lora.alpha >= 1, f"{stage}.lora.alpha", f"must be >= 1, got {lora.alpha}")
        need(0 <= lora.dropout < 1, f"{stage}.lora.dropout", f"must be in [0, 1), got {lora.dropout}")
        need(not lora.quantize_4bit or lora.r > 0, f"{stage}.lora.quantize_4bit", "needs lora.r > 0 (QLoRA)")
        if lora.quantize_4bit:
            need(importlib.util.find_spec("bitsandbytes") is not None, f"{stage}.lora.quantize_4bit",
                 "needs the bitsandbytes package (pip install bitsandbytes; CUDA only)")
        if getattr(r, stage).use_liger_kernel:
            need(importlib.util.find_spec("liger_kernel") is not None, f"{stage}.use_liger_kernel",
                 "needs the liger-kernel package (pip install liger-kernel; Triton kernels, CUDA GPUs only)")
    for stage in ("sft", "dpo", "reward_model"):
        _check_attention(getattr(r, stage).attn_implementation, f"{stage}.attn_implementation", need)


# attn_implementation values transformers accepts without a kernel from the Hub, and the package each needs
ATTENTION = {"eager": None, "sdpa": None, "flex_attention": None, "flash_attention_2": "flash_attn",
             "flash_attention_3": "flash_attn_interface"}


def _check_attention(value: str | None, key: str, need: Need) -> None:
    if value is None or value.startswith("kernels-community/"):  # a Hub kernel: transformers fetches and checks it
        return
    need(value in ATTENTION, key, f"must be one of {sorted(ATTENTION)} or a kernels-community/... Hub kernel, "
                                  f"got {value!r}")
    package = ATTENTION[value]  # known, past the check above
    need(package is None or importlib.util.find_spec(package) is not None, key,
         f"{value} needs the {package} package (CUDA GPUs only)")


def _check_reward_model(rm: RewardModelConfig, need: Need) -> None:
    need(rm.learning_rate > 0, "reward_model.learning_rate", f"must be > 0, got {rm.learning_rate}")
    need(0 <= rm.eval_fraction < 1, "reward_model.eval_fraction", f"must be in [0, 1), got {rm.eval_fraction}")
    need(rm.num_epochs > 0, "reward_model.num_epochs", f"must be > 0, got {rm.num_epochs}")
    for name in ("batch_size", "gradient_accumulation_steps", "max_length", "checkpoint_every_steps",
                 "score_batch_size"):
        need(getattr(rm, name) >= 1, f"reward_model.{name}", f"must be >= 1, got {getattr(rm, name)}")
    lora = rm.lora
    need(lora.r >= 0, "reward_model.lora.r", f"must be >= 0 (0 = no LoRA), got {lora.r}")
    need(lora.alpha >= 1, "reward_model.lora.alpha", f"must be >= 1, got {lora.alpha}")
    need(0 <= lora.dropout < 1, "reward_model.lora.dropout", f"must be in [0, 1), got {lora.dropout}")
    need(not lora.quantize_4bit, "reward_model.lora.quantize_4bit",
         "is not supported for the reward model (QLoRA: sft.lora / dpo.lora only)")
    for capability, w in (rm.weight if isinstance(rm.weight, dict) else {None: rm.weight}).items():
        key = "reward_model.weight" if capability is None else f"reward_model.weight.{capability}"
        need(capability is None or capability in CAPABILITIES, key,
             f"is not a capability (known: {', '.join(CAPABILITIES)})")
        need(w >= 0, key, f"must be >= 0, got {w}")
        need(rm.enabled or w == 0, key, "has no effect unless reward_model.enabled is true")
    for i, src in enumerate(rm.preference_sources):
        need(Path(src).is_file(), f"reward_model.preference_sources[{i}]", f"is not a file: {src}")


def _check_variants(r: Recipe, where: str, need: Need) -> None:
    """Every variant builds (known, variable keys of the right type) and passes the section's own checks."""
    for stage in ("sft", "dpo", "reward_model"):
        cfg = getattr(r, stage)
        if not cfg.variants:
            need(cfg.variant_weights is None, f"{stage}.variant_weights", f"needs {stage}.variants")
            continue
        need(len(cfg.variants) >= 2, f"{stage}.variants",
             "needs at least 2 entries (the average of one model is itself)")
        seen = []
        for i, overrides in enumerate(cfg.variants):
            key = f"{stage}.variants[{i}]"
            try:
                vcfg, vseed = variant(cfg, overrides, r.seed)
                check(dataclasses.replace(r, **{stage: vcfg}), where)
            except RecipeError as e:
                raise RecipeError(f"{where}: {key}: {str(e).removeprefix(where + ': ').lstrip(': ')}") from None
            need((vcfg, vseed) not in seen, key,
                 "trains the same model as an earlier variant (change a key or the seed)")
            seen.append((vcfg, vseed))
        weights = cfg.variant_weights
        need(weights is None or (len(weights) == len(cfg.variants) and min(weights) >= 0 and sum(weights) > 0),
             f"{stage}.variant_weights", f"needs one weight >= 0 per variant, not all 0; got {weights}")


def _check_sources(p: PromptsConfig, need: Need) -> None:
    need(len(p.sources) > 0, "prompts.sources", "must name at least one source")
    for i, src in enumerate(p.sources):
        key = f"prompts.sources[{i}]"
        for cap in src.capabilities:
            need(cap in CAPABILITIES, f"{key}.capabilities", f"has unknown capability {cap!r} (known: {CAPABILITIES})")
        need(not src.per_round or src.kind in ("tiny", "generator"), f"{key}.per_round",
             f"draws new prompts each round, which only tiny and generator sources can (this one is {src.kind})")
        if src.kind == "file":
            need(src.path is not None, f"{key}.path", "is required for kind: file")
            need(Path(src.path).exists(), f"{key}.path", f"does not exist: {src.path}")
            need(Path(src.path).is_file(), f"{key}.path", f"is not a file: {src.path}")
        elif src.kind == "hf":
            need(bool(src.name), f"{key}.name", "is required for kind: hf (a dataset id or local dataset folder)")
        elif src.kind == "generator":
            need(src.name in GENERATORS, f"{key}.name",
                 f"names unknown generator {src.name!r} (known: {sorted(GENERATORS)})")
            need(src.num_train >= 0 and src.num_heldout >= 0 and src.num_train + src.num_heldout > 0, key,
                 "generator sources need num_train and/or num_heldout > 0")
        else:
            need(src.num_train > 0 and src.num_heldout > 0, f"{key}", "tiny sources need num_train and num_heldout > 0")


def _check_eval(e: EvalConfig, need: Need) -> None:
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


def runs_model_code(r: Recipe) -> bool:
    """Whether the recipe executes model-generated code: the code verifier (training, revise or held-out
    eval), a verifier of the user's (which may call the sandbox), or HumanEval."""
    names = r.score.verifiers.values()
    return "code" in names or any(custom.is_reference(n) for n in names) or "humaneval" in r.eval.benchmarks


def _check_sandbox(r: Recipe, need: Need) -> None:
    """Sets this process's minimum isolation to the recipe's, and, when the recipe runs model code, checks
    now that this machine gives it: fail closed before any generation, never a warning mid-run."""
    if not runs_model_code(r):
        sandbox.require(r.score.sandbox.isolation, check=False)
        return
    try:
        sandbox.require(r.score.sandbox.isolation)
    except sandbox.SandboxUnavailable as e:
        need(False, "score.sandbox.isolation", f"({r.score.sandbox.isolation}) cannot be met here: {e}")


def _check_score(s: ScoreConfig, need: Need) -> None:
    need(s.code_timeout_s > 0, "score.code_timeout_s", f"must be > 0 seconds, got {s.code_timeout_s}")
    need(s.num_workers >= 1, "score.num_workers", f"must be >= 1, got {s.num_workers}")
    for i, cap in enumerate(s.check_steps):
        need(cap in CAPABILITIES, f"score.check_steps[{i}]", f"is not a known capability {CAPABILITIES}")
    for cap, name in s.verifiers.items():
        need(cap in CAPABILITIES, f"score.verifiers.{cap}", f"is not a known capability {CAPABILITIES}")
        why = unknown_verifier(name)
        need(why is None, f"score.verifiers.{cap}", f"names {why}")


def _check_revise(v: ReviseConfig, need: Need) -> None:
    need(v.samples >= 1, "revise.samples", f"must be >= 1, got {v.samples}")
    for cap in v.capabilities:
        need(cap in CAPABILITIES, "revise.capabilities", f"has unknown capability {cap!r} (known: {CAPABILITIES})")
    try:
        v.feedback.format(reason="")
    except (KeyError, IndexError, ValueError) as e:
        need(False, "revise.feedback", f"must be a format string with only {{reason}} in braces ({e!r})")


def _check_hub(h: HubConfig, need: Need) -> None:
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


def check_prompt_files(r: Recipe, where: str) -> None:
    """Reads every file source now, so a bad prompt file fails (naming file and line) before any work starts."""
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


def check_preference_files(r: Recipe, where: str) -> None:
    """Reads every preference file now, so a bad line fails (naming file and line) before any work starts."""
    from posttrain.stages.reward_model import read_preference_file  # torch: only with preference files

    for i, src in enumerate(r.reward_model.preference_sources):
        try:
            read_preference_file(Path(src))
        except SchemaError as e:
            raise RecipeError(f"{where}: reward_model.preference_sources[{i}]: bad preference file: {e}") from None
