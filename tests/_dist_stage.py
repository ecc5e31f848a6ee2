"""One SFT or DPO stage on a tiny table, run by every rank of an `accelerate launch`; each rank writes what
its trainer actually ran under to OUT/rank<N>.json. tests/test_deepspeed.py launches it with the CPU
DeepSpeed configs in recipes/accelerate/ (2 gloo processes).

Usage: python -m accelerate.commands.launch --config_file CONFIG tests/_dist_stage.py STAGE BASE OUT [OPTION...]
STAGE: sft or dpo. OPTION: lora (r=8 adapters, merged on save), precompute (DPO reference log-probs cached first),
checkpoints (one after every optimizer step, for resume tests).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

import posttrain.stages.dpo
import posttrain.stages.sft
from posttrain.run import schema
from posttrain.recipe.config import DPOConfig, LoRAConfig, SFTConfig
from posttrain.run.dist import shutdown, world
from posttrain.tiny import world as tiny_world

NUM_EXAMPLES, BATCH_SIZE = 8, 2  # 2 ranks x 2 rows = 4 rows a step: 2 optimizer steps


def main(stage: str, base: str, out: Path, options: list[str]) -> None:
    seen: dict = {}
    module = posttrain.stages.sft if stage == "sft" else posttrain.stages.dpo
    train_and_save = module.train_and_save

    def spy(trainer, tokenizer, stage_out, **kwargs):
        """The stage's own train_and_save, then what the trainer ran under."""
        info = train_and_save(trainer, tokenizer, stage_out, **kwargs)
        engine = trainer.model_wrapped
        seen.update(distributed_type=str(trainer.accelerator.state.distributed_type),
                    num_processes=trainer.accelerator.num_processes, process_index=trainer.accelerator.process_index,
                    device=str(trainer.accelerator.device), engine=type(engine).__name__,
                    zero_stage=engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None,
                    optimizer=type(getattr(engine, "optimizer", None)).__name__,
                    # ZeRO: how many ranks each parameter group's optimizer state and gradients are split over
                    partition_count=getattr(getattr(engine, "optimizer", None), "partition_count", None),
                    dist_world_size=dist.get_world_size() if dist.is_initialized() else 1,
                    dist_backend=dist.get_backend() if dist.is_initialized() else None)
        return info

    module.train_and_save = spy
    lora = LoRAConfig(r=8 if "lora" in options else 0)
    every = 1 if "checkpoints" in options else 50
    drawn = tiny_world.draw("math", "train", NUM_EXAMPLES, 0)
    if stage == "sft":
        mix = schema.from_records([{"id": r["id"], "prompt_id": r["id"], "capability": "math", "round": 1,
                                    "reward": 1.0,
                                    "messages": r["messages"] + [{"role": "assistant", "content": reply}]}
                                   for r, reply in drawn], "sft")
        cfg = SFTConfig(learning_rate=1e-3, batch_size=BATCH_SIZE, lora=lora, checkpoint_every_steps=every)
        info = posttrain.stages.sft.sft(out / stage, base, mix, cfg, seed=0)
    else:  # each prompt's reply chosen, the next prompt's reply rejected
        pairs = schema.from_records([{"id": r["id"], "prompt_id": r["id"], "capability": "math", "round": 1,
                                      "prompt": r["messages"], "chosen": [{"role": "assistant", "content": reply}],
                                      "rejected": [{"role": "assistant", "content": drawn[(i + 1) % NUM_EXAMPLES][1]}],
                                      "chosen_reward": 1.0, "rejected_reward": 0.0}
                                     for i, (r, reply) in enumerate(drawn)], "pairs")
        cfg = DPOConfig(learning_rate=1e-3, batch_size=BATCH_SIZE, lora=lora, checkpoint_every_steps=every,
                        precompute_ref_log_probs="precompute" in options)
        info = posttrain.stages.dpo.dpo(out / stage, base, pairs, cfg, seed=0)
    rank = world().rank
    (out / f"rank{rank}.json").write_text(json.dumps({**seen, "rank": rank, "world_size": world().size, "info": info}))
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:])
