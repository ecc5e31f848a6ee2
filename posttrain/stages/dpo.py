"""DPO stage: TRL's DPOTrainer with Llama 3's two changes.

- NLL term: sigmoid DPO loss + 0.2 x NLL on the chosen response (`loss_type=["sigmoid", "sft"]`).
- Formatting tokens (header and termination tokens) carry no loss in chosen or rejected: both
  responses share them, and pushing their likelihood apart caused tail repetition and abrupt stops.
  TRL has no switch for this, so `FormattingTokenMaskCollator` removes them from the completion mask; which
  tokens they are is read from the tokenizer's chat template (`posttrain.training.chat_format`), for any template.

Speed switches (`DPOConfig`): reference log-probs precomputed once, length-grouped batches, padding-free
forwards (`posttrain/training/dpo_packing.py`: TRL 1.16 turned its own `padding_free` off) and, on top, one forward over
a pair's shared prompt; each tested to train like the plain path.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import nullcontext
from pathlib import Path

import pyarrow as pa
import torch
from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import DPOTrainer

from posttrain.training.chat_format import FormattingTokenMaskCollator as FormattingTokenMaskCollator  # re-exported
from posttrain.training.chat_format import dpo_collator
from posttrain.training.chat_format import formatting_token_ids as formatting_token_ids  # re-exported
from posttrain.models.chat_turns import prompt_turns, template_column
from posttrain.recipe.config import DPOConfig
from posttrain.run.dist import barrier, world
from posttrain.training.dpo_packing import PackedForward
from posttrain.training.trainer import common_args, copy_model, lora_args, model_init_args, train_and_save, trained
from posttrain.run.fingerprint import outputs
from posttrain.run.progress import Progress
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context, read
from posttrain.training.variants import train_variants

log = logging.getLogger("posttrain")
PAIRS_ON_DISK = "pairs_dataset"  # under the stage's directory while it trains with precomputed reference log-probs


def dpo(out: Path, sft_model: str | Path, pairs: pa.Table, cfg: DPOConfig, seed: int,
        trainer_args: dict | None = None, template_kwargs: dict | None = None) -> dict:
    """Trains the SFT model on `pairs` (the `pairs` schema) against itself as reference; saves `out/model`.
    `trainer_args`: TRL config fields set from outside the section (experiment tracking); `template_kwargs`:
    the recipe's `chat_template_kwargs`."""
    if pairs.num_rows == 0 or not cfg.enabled:
        copy_model(sft_model, out / "model")
        return {"pairs": pairs.num_rows if cfg.enabled else 0, "steps": 0}
    if (done := trained(out)) is None:
        trainer, tokenizer = dpo_trainer(out, sft_model, pairs, cfg, seed, template_kwargs, **(trainer_args or {}))
        done = train_and_save(trainer, tokenizer, out, extra=lambda t: too_long(pairs.num_rows, t.train_dataset, cfg))
    if world().is_main:
        shutil.rmtree(out / PAIRS_ON_DISK, ignore_errors=True)
    return {"pairs": pairs.num_rows, **done}


def pair_lengths(dataset) -> list[int]:
    """Each tokenized pair's length as training sees it: its prompt and the longer of its two replies."""
    return [len(p) + max(len(c), len(r))
            for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)]


def too_long(num_pairs: int, dataset, cfg: DPOConfig) -> dict:
    """How many pairs do not fit `cfg.max_length` whole: `dropped` (TRL leaves out a pair whose prompt alone
    fills it) and `truncated` (TRL cuts the longer reply, or both: the pair then compares their starts)."""
    cut = sum(length > cfg.max_length for length in pair_lengths(dataset))
    counts = {"pairs_dropped_too_long": num_pairs - len(dataset), "pairs_truncated": cut}
    if any(counts.values()):
        log.warning("dpo: of %d pairs, %d dropped (the prompt fills dpo.max_length=%d) and %d truncated; "
                    "raise dpo.max_length to train on them whole", num_pairs, counts["pairs_dropped_too_long"],
                    cfg.max_length, cut)
    return counts


def dpo_trainer(out: Path, sft_model: str | Path, pairs: pa.Table, cfg: DPOConfig, seed: int,
                template_kwargs: dict | None = None, **overrides):
    """The stage's DPOTrainer and tokenizer; `overrides` replace TRL DPOConfig fields (benchmarks, tests).

    Chosen and rejected go through the model in one forward (TRL stacks them in one batch). With
    `cfg.precompute_ref_log_probs`, TRL runs the reference pass once, at construction, through this
    stage's collator, so the cached log-probs leave out the same formatting tokens as the policy's.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig as TRLDPOConfig

    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    dataset = {k: pairs.column(k).to_pylist() for k in ("prompt", "chosen", "rejected")}
    turns = prompt_turns(tokenizer, template_kwargs)
    dataset = Dataset.from_dict({**dataset, "prompt": [turns(p) for p in dataset["prompt"]]}
                                | template_column(pairs.num_rows, template_kwargs))
    if cfg.precompute_ref_log_probs:
        dataset = _for_reference_pass(dataset, out / PAIRS_ON_DISK)
    args = TRLDPOConfig(**{**common_args(out, cfg, seed), "beta": cfg.beta, "loss_type": ["sigmoid", "sft"],
                           "loss_weights": [1.0, cfg.nll_weight], "lr_scheduler_type": "linear",
                           "precompute_ref_log_probs": cfg.precompute_ref_log_probs,
                           "precompute_ref_batch_size": 4 * cfg.batch_size,  # no grad, no activations kept
                           **model_init_args(cfg), **overrides})
    collator = None
    if cfg.mask_formatting_tokens:
        collator = dpo_collator(tokenizer, cfg.max_length, template_kwargs)
    # With LoRA the reference is the same model with its adapters off: no second copy in memory.
    model = {"model": str(sft_model), **lora_args(cfg.lora, sft_model, cfg.attn_implementation)}
    trainer = StageDPOTrainer(**model, args=args, data_collator=collator, train_dataset=dataset,
                              processing_class=tokenizer, group_by_length=cfg.group_by_length,
                              padding_free=cfg.padding_free, share_prefix=cfg.share_prefix)
    _release_reference_engine(trainer)
    return trainer, tokenizer


def _release_reference_engine(trainer) -> None:
    """Removes the hooks of the DeepSpeed inference engine TRL wrapped the policy in for the reference pass.

    Under ZeRO-3 that engine's parameter hooks stay on the policy's modules; the training engine then adds
    its own, and the first training forward dies in DeepSpeed's parameter trace ("IndexError: pop from an
    empty deque"). The reference log-probs are already in the dataset, so the engine has done its job.
    """
    engine = getattr(trainer, "_precompute_engine", None)  # TRL >= 1.16 builds it only under DeepSpeed
    if engine is not None:
        engine.destroy()
        trainer._precompute_engine = None


class StageDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer with three switches of the stage.

    `group_by_length`: batches hold pairs of similar length. transformers' LengthGroupedSampler shuffles,
    cuts megabatches of 50 batches and sorts each by length, so every pair is still seen once per epoch but
    a batch pads its chosen and rejected rows to less; its order is set by the seed and the epoch alone, so
    a resumed run sees the pairs an uninterrupted one does (`EpochSeededLengthGroupedSampler`).
    `padding_free`: the policy's and the reference model's forwards (or the reference pass, when
    precomputed) run on the batch's sequences packed into rows (`PackedForward`); TRL's loss code reads the
    outputs in the padded layout (with LoRA and no precomputed pass, the reference is the policy with its
    adapters off: `_adapters_off`).
    `share_prefix` (with `padding_free`): in those rows a pair's rejected sequence reads the prompt it shares
    with its chosen one from the chosen's tokens instead of recomputing it.
    """

    def __init__(self, *args, group_by_length: bool = False, padding_free: bool = False, share_prefix: bool = False,
                 **kwargs):
        self.group_by_length, self.padding_free_rows, self.share_prefix = group_by_length, padding_free, share_prefix
        super().__init__(*args, **kwargs)  # the reference pass, when precomputed, runs in here

    def _get_train_sampler(self, train_dataset=None):
        if not self.group_by_length:
            return super()._get_train_sampler(train_dataset)
        ds = self.train_dataset if train_dataset is None else train_dataset
        limit = self.args.max_length or float("inf")
        lengths = [min(limit, length) for length in pair_lengths(ds)]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        sampler = EpochSeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                                  lengths=lengths, seed=seed)
        self.remove_callback(_SamplerEpoch)  # an earlier call's (the handler removes the first one of the class)
        self.add_callback(_SamplerEpoch(sampler))
        return sampler

    def _compute_loss(self, model, inputs, return_outputs):
        if not self.padding_free_rows:
            return super()._compute_loss(model, inputs, return_outputs)
        ref_model = self.ref_model  # TRL calls it in here when the reference is not precomputed
        if ref_model is not None:
            self.ref_model = self._packed(ref_model)
        elif not self.precompute_ref_logps and is_peft_model(self.model):
            self.ref_model = self._adapters_off()
        try:
            return super()._compute_loss(self._packed(model), inputs, return_outputs)
        finally:
            self.ref_model = ref_model

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """TRL's reference pass, logged as a `Progress` of pairs: minutes on a real model and data set, where
        TRL's own tqdm bar is one line that never ends in a log file. Main process only; nothing when TRL finds
        the pass cached."""
        desc = "dpo reference pass" + ("" if name == "train" else f" ({name})")
        with (Progress(desc, len(dataset), "pairs") if self.accelerator.is_main_process else nullcontext()) as p:
            self._reference_progress = p
            try:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            finally:
                self._reference_progress = None

    def compute_ref_log_probs(self, model, inputs):
        chosen, rejected = super().compute_ref_log_probs(self._packed(model) if self.padding_free_rows else model,
                                                         inputs)
        if (progress := getattr(self, "_reference_progress", None)) is not None:
            # every rank runs a shard of the batches; the last shards are padded with repeated pairs
            progress.set(min(progress.total, progress.done + len(chosen) * self.accelerator.num_processes))
        return chosen, rejected

    def _packed(self, model) -> PackedForward:
        return PackedForward(model, share_prefix=self.share_prefix)

    def _adapters_off(self):
        """A LoRA policy's reference as TRL takes it (the policy with its adapters off, or with its "ref"
        adapter), packed: TRL calls `self.model` for it, which `_compute_loss` cannot wrap, but it calls a
        `ref_model` when there is one."""
        from trl.trainer.utils import use_adapter

        unwrapped = self.accelerator.unwrap_model(self.model)
        adapter = "ref" if "ref" in unwrapped.peft_config else None
        packed = self._packed(self.model)

        def forward(**kwargs):
            with use_adapter(unwrapped, adapter_name=adapter):
                return packed(**kwargs)

        return forward


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler, its order a function of `seed` and the epoch alone.

    Without a generator it shuffles from the global torch RNG when iterated, whose state at that point
    differs between an uninterrupted run and one resumed mid-epoch (transformers restores the checkpoint's
    RNG states only after skipping the epoch's trained batches): the resumed epoch would then see some
    pairs twice and skip others. Here each epoch reseeds the generator with seed + epoch (as accelerate's
    SeedableRandomSampler does); the Trainer and accelerate pass the epoch through `set_epoch`.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class _SamplerEpoch(TrainerCallback):
    """Sets the sampler's epoch at each epoch's start. accelerate's `set_epoch` does not reach it in the
    epoch resumed mid-way under a multi-process launch (three samplers deep: skipped, sharded, batched)."""

    def __init__(self, sampler: EpochSeededLengthGroupedSampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(state.epoch or 0))  # resumed: the checkpoint's epoch, e.g. 1.5 -> 1


def _for_reference_pass(dataset, path: Path):
    """`dataset` sorted by length, saved under the stage's directory and memory-mapped back.

    TRL's reference pass reads the pairs in order, in batches: sorted, a batch pads little (training
    draws them in a random order either way). TRL caches the log-probs in a file beside the dataset's
    own; an in-memory dataset has none, so each process would pick its own temporary directory, and under
    a multi-process launch the ranks but the main one would look for a file only it wrote (FileNotFoundError).
    In the run directory, which every rank sees, they all find it.

    A stage killed after the pass resumes without redoing it: the saved pairs are kept while their digest
    (written last) matches, so TRL finds its cache file, named by the dataset's and the reference model's
    content hashes (other pairs or another SFT model: a new pass).
    """
    from datasets import load_from_disk

    digest = path / "pairs.fingerprint"
    if world().is_main and not (digest.is_file() and digest.read_text() == dataset._fingerprint):
        chars = [sum(len(m["content"]) for k in ("prompt", "chosen", "rejected") for m in row[k]) for row in dataset]
        shutil.rmtree(path, ignore_errors=True)
        dataset.add_column("chars", chars).sort("chars").remove_columns("chars").save_to_disk(path)
        digest.write_text(dataset._fingerprint)  # datasets' content hash of an in-memory table
    barrier()
    return load_from_disk(path)


def stage(ctx: Context, r: int, sft_out: StageOutput, mixed: StageOutput) -> StageOutput:
    """DPO from the round's SFT model on the mix's pairs: the round's policy."""
    cfg = ctx.recipe.dpo
    def train(out, c, s):
        return dpo(out, sft_out.model, read(mixed, "pairs"), c, s, ctx.tracked(r, "dpo"), ctx.template_kwargs)

    return ctx.run.stage(r, "dpo", outputs(cfg), [sft_out, mixed.part("pairs.parquet")],
                         lambda out: train_variants(out, cfg, ctx.seed, train), resumable=True, mode="all")
