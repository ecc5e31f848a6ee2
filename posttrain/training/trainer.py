"""What the SFT and DPO stages share: trainer arguments common to both, resume and the final save."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from posttrain.run.dist import world
from posttrain.run.faults import kill_if, signal_if, stage_point
from posttrain.run.preemption import Preempted, SignalFlag
from posttrain.run.progress import progress_callback
from posttrain.run.rundir import write_json

log = logging.getLogger(__name__)


class KillAtStep(TrainerCallback):
    """Fault injection (see posttrain.run.faults): dies right after checkpoint N is written."""

    def __init__(self, stage_dir: Path):
        self.stage_dir = stage_dir

    def on_save(self, args, state, control, **kwargs):
        kill_if(stage_point(self.stage_dir, f"step{state.global_step}"))


class CheckpointOnSignal(TrainerCallback):
    """After each optimizer step: when any rank caught a stop signal (`posttrain.run.preemption`), save a
    checkpoint and end the training; `stopped_at` is that step. Tests send the signal from here
    (`POSTTRAIN_SIGNAL_AT`, posttrain.run.faults)."""

    def __init__(self, flag: SignalFlag, stage_dir: Path):
        self.flag, self.stage_dir, self.stopped_at = flag, stage_dir, None

    def on_step_end(self, args, state, control, **kwargs):
        signal_if(stage_point(self.stage_dir, f"step{state.global_step}"))
        if _any_rank(self.flag.signum is not None):
            control.should_save = control.should_training_stop = True
            self.stopped_at = state.global_step


def _any_rank(flag: bool) -> bool:
    """`flag` or'ed over the ranks of a multi-process launch (a collective: every rank calls it each step). Over
    gloo, on the CPU: under NCCL a GPU tensor read back every step would make the host wait for the GPU's queue."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_cpu_group(dist))
    return bool(t.item())


_CPU_GROUPS: dict = {}  # the default process group -> a gloo group of the same ranks (None: it is gloo)


def _cpu_group(dist):
    world = dist.group.WORLD
    if world not in _CPU_GROUPS:  # made at the same step on every rank (new_group is a collective)
        _CPU_GROUPS[world] = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return _CPU_GROUPS[world]


class LogLastStep(TrainerCallback):
    """Logs the last optimizer step too (transformers logs every `logging_steps` only), so a stage's
    results and curves always end with its final window, however few steps it has; and every checkpoint's
    step, so a checkpoint's history holds the loss of every step before it (`run_loss`)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps or control.should_save:  # DefaultFlowCallback ran first
            control.should_log = True


def common_args(out: Path, cfg, seed: int) -> dict:
    """TrainingArguments fields set the same way for SFT and DPO (cfg: an SFTConfig or DPOConfig section)."""
    return dict(
        output_dir=str(out / "checkpoints"), learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_epochs,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length, seed=seed, data_seed=seed, report_to="none", logging_steps=10,
        logging_first_step=True,  # curves start from the model as it came in
        # Checkpoints let a killed stage resume mid-training; only the last one is kept.
        save_strategy="steps", save_steps=cfg.checkpoint_every_steps, save_total_limit=1,
        disable_tqdm=True, dataloader_num_workers=0,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),  # TRL defaults to bf16, which CPUs refuse
        use_cpu=_use_cpu(),
        gradient_checkpointing=cfg.gradient_checkpointing, torch_compile=cfg.torch_compile,
        use_liger_kernel=_liger_available(cfg.use_liger_kernel),
    )


def _use_cpu() -> bool:
    """True without a GPU: only use_cpu lets a multi-process launch train data-parallel there (gloo); else
    each rank would train alone on everything. DeepSpeed keeps its own engine on CPU (cpu_zero*.yaml)."""
    if torch.cuda.is_available():
        return False
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        # accelerate turns FSDP on only for GPU-like devices; on CPU its state says MULTI_CPU, plain DDP.
        log.warning("FSDP needs GPUs: without one accelerate trains plain data-parallel (DDP, every rank holds "
                    "the whole model); for sharded training on CPU launch with recipes/accelerate/cpu_zero3.yaml")
    return True


def _liger_available(wanted: bool) -> bool:
    """`wanted`, after checking that liger-kernel imports (transformers would fail later, less clearly)."""
    if wanted and importlib.util.find_spec("liger_kernel") is None:
        raise ImportError("use_liger_kernel needs the liger-kernel package (pip install liger-kernel; "
                          "Triton kernels, CUDA GPUs only)")
    return wanted


def attention_kwargs(attn_implementation: str | None) -> dict:
    """`from_pretrained` keyword arguments for a section's attention kernel: none keeps the model's default."""
    return {"attn_implementation": attn_implementation} if attn_implementation else {}


def model_init_args(cfg) -> dict:
    """TRL config fields for loading the model from its path: the section's attention kernel, if it names one."""
    return {"model_init_kwargs": attention_kwargs(cfg.attn_implementation)} if cfg.attn_implementation else {}


def lora_args(lora, model_path: str | Path, attn_implementation: str | None = None) -> dict:
    """Trainer keyword arguments for a `LoRAConfig`: none when r = 0; a peft config, plus a 4-bit base
    model for QLoRA. TRL wraps the model itself; `train_and_save` merges the adapters before saving."""
    if lora.r == 0:
        return {}
    from peft import LoraConfig

    out = {"peft_config": LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                     target_modules=lora.target_modules, task_type="CAUSAL_LM")}
    if lora.quantize_4bit:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        out["model"] = AutoModelForCausalLM.from_pretrained(model_path, quantization_config=quant,
                                                            **attention_kwargs(attn_implementation))
    return out


TRAINED = "trained.json"  # beside out/model once it is saved: the training's results
LOG_HISTORY = "log_history.json"  # beside it: every metric the trainer logged, by step (the report plots them)


def trained(out: Path) -> dict | None:
    """The results of an earlier run that trained and saved `out/model` (a rerun of a stage killed after
    that save, e.g. before its manifest, does not train again); None when it has to train."""
    marker = out / TRAINED
    if not (marker.is_file() and (out / "model" / "config.json").is_file()):
        return None
    log.info("%s: finished before, not trained again", out)
    return json.loads(marker.read_text())


def train_and_save(trainer, tokenizer, out: Path, extra: Callable[[Any], dict] | None = None) -> dict:
    """Trains (resuming from the last complete checkpoint in `out`, if any: `resume_checkpoint`), saves
    `out/model`, drops checkpoints; returns the results ({steps, train_loss, resumed} + `extra(trainer)`),
    also kept for `trained(out)`.

    A LoRA (PEFT) model is merged into its base before saving. The results are written before the
    checkpoints go, so from the save on a killed run is never trained again, and before it a rerun
    resumes from the last complete checkpoint.
    """
    checkpoints = out / "checkpoints"
    with SignalFlag() as flag:  # SIGTERM, SIGUSR1, Ctrl-C: a checkpoint after this step, then stop
        stop = CheckpointOnSignal(flag, out)
        for callback in (stop, KillAtStep(out), LogLastStep(), progress_callback(out.name.removesuffix(".tmp"))):
            trainer.add_callback(callback)  # the last: steps, rate, ETA in the log
        resume = resume_checkpoint(checkpoints)
        result = trainer.train(resume_from_checkpoint=resume)
    if stop.stopped_at is not None:
        raise Preempted(flag.signum, out.name.removesuffix(".tmp"), stop.stopped_at, str(checkpoints))
    model = trainer.accelerator.unwrap_model(trainer.model)
    if is_peft_model(model):  # LoRA: save the merged model, so `out/model` is always a plain model folder
        if trainer.is_world_process_zero():
            merged(model).save_pretrained(out / "model")
    else:
        trainer.save_model(str(out / "model"))
    release_deepspeed_config()
    history = trainer.state.log_history  # restored from the checkpoint on resume: the whole run's
    # resumed, the trainer's own mean covers only the steps after the checkpoint
    loss = run_loss(history, result.training_loss) if resume is not None else result.training_loss
    info = {"steps": result.global_step, "train_loss": round(loss, 4), "resumed": resume is not None,
            **last_logged(history), **(extra(trainer) if extra else {})}
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out / "model")
        write_json(out / LOG_HISTORY, history)
        _keep_tensorboard(checkpoints, out / "tensorboard")
        write_json(out / TRAINED, info)
        shutil.rmtree(checkpoints, ignore_errors=True)
    kill_if(stage_point(out, "saved"))
    return info


def merged(model):
    """A LoRA (PEFT) model's adapters merged into its base, as a plain transformers model.

    A QLoRA base is 4-bit: merging there would round each update into nf4 and save 4-bit weights, which the
    next round would quantize again (the error compounding round over round) and which a full-precision stage
    or `posttrain average` cannot use. So the adapters go onto the base reloaded in bfloat16 first."""
    base = model.get_base_model()
    if not getattr(base, "is_loaded_in_4bit", False):
        return model.merge_and_unload()
    import tempfile

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = model.peft_config[model.active_adapter].base_model_name_or_path
    with tempfile.TemporaryDirectory() as adapters:
        model.save_pretrained(adapters)  # the adapters only
        full = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        return PeftModel.from_pretrained(full, adapters).merge_and_unload()


_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
TRAINER_STATE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME


def resume_checkpoint(checkpoints: Path) -> str | None:
    """The newest complete `checkpoint-N` under `checkpoints` (None: none, train from the start); the main
    process deletes the newer, incomplete ones.

    transformers writes a checkpoint folder in place: the model, then the optimizer, scheduler and RNG
    states, then `trainer_state.json`, and only after that deletes the older checkpoints (save_total_limit).
    A run killed while saving leaves a newest folder without that file, or with part of it, and resuming
    from it fails on every rerun, while the checkpoint before it is still whole. So a checkpoint counts as
    complete when its `trainer_state.json` parses. The choice does not depend on the deletion: every rank
    skips the incomplete folders whether or not the main process has deleted them yet.
    """
    found = sorted(((int(m[1]), path) for path in checkpoints.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                    if (m := _CHECKPOINT.match(path.name)) and path.is_dir()), reverse=True)
    paths = [path for _, path in found]  # newest first
    newest = next((i for i, path in enumerate(paths) if _complete(path)), len(paths))
    if world().is_main:
        for path in paths[:newest]:
            log.warning("%s: incomplete checkpoint (killed while saving?), deleted", path)
            shutil.rmtree(path, ignore_errors=True)
    return str(paths[newest]) if newest < len(paths) else None


def _complete(checkpoint: Path) -> bool:
    try:
        return isinstance(json.loads((checkpoint / TRAINER_STATE).read_text()), dict)
    except (OSError, ValueError):  # missing, unreadable, truncated (UnicodeDecodeError is a ValueError)
        return False


def _keep_tensorboard(checkpoints: Path, dst: Path) -> None:
    """Moves TensorBoard's event folders (transformers writes them in output_dir/runs/, here the checkpoints
    folder, which goes once trained) into the stage's folder; a resumed training adds a folder of its own."""
    runs = checkpoints / "runs"
    if runs.is_dir():
        dst.mkdir(exist_ok=True)
        for run in sorted(runs.iterdir()):
            shutil.move(str(run), str(dst / run.name))


# What the results keep of the last logging window (the whole curve is in LOG_HISTORY): the loss, and
# TRL's token accuracy (SFT, DPO) and reward accuracy / margin (DPO: chosen's implicit reward above rejected's).
LAST_LOGGED = {"loss": "final_loss", "mean_token_accuracy": "token_accuracy", "rewards/accuracies": "reward_accuracy",
               "rewards/margins": "reward_margin", "accuracy": "train_accuracy"}  # accuracy: the RM's pairs


def run_loss(history: list[dict], fallback: float) -> float:
    """The mean loss over every step of the run, from its logged windows (each logged loss is the mean
    over the steps since the previous log, and weighs that many steps); `fallback` without any."""
    losses = {e["step"]: e["loss"] for e in history if "loss" in e and "step" in e}
    total, previous = 0.0, 0
    for step in sorted(losses):
        total, previous = total + losses[step] * (step - previous), step
    return total / previous if previous else fallback


def last_logged(history: list[dict]) -> dict:
    """{name: value} of the LAST_LOGGED metrics in the last training log entry that has a loss."""
    entry = next((e for e in reversed(history) if "loss" in e), {})
    return {name: round(entry[key], 4) for key, name in LAST_LOGGED.items() if key in entry}


def release_deepspeed_config() -> None:
    """Unregisters the trainer's DeepSpeed config from transformers once a stage has trained.

    While it is registered at ZeRO-3, every `from_pretrained` in the process partitions the model over
    the ranks, a collective: the loads that follow on the main process alone (scoring with the reward
    model, averaging, copying) would wait for the other ranks forever. The next trainer registers its own.
    """
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def copy_model(src: str | Path, dst: Path) -> None:
    """When there is nothing to train on, the stage's model is its input model, unchanged (written once,
    by the main process)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not world().is_main:
        return
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
