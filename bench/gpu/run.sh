#!/usr/bin/env bash
# Issue 7 on one GPU, in one go (9.5 min at most, DEADLINE: every part has its own timeout):
#   1. install the wheels the image lacks (bench/gpu/fetch_wheels.sh fetched them here),
#   2. bench/train_throughput.py --device cuda: TRL defaults vs the stage's fast switches on a random
#      Llama-3.2-1B-shaped model (lengths ~600, max 2048, bf16 autocast), one process per variant,
#   3. the team's baseline script (plain TRL, bf16 weights) on the same card: matmul ceiling, DPO,
#   4. tests/test_fast_paths.py on CUDA (float32): packing, precomputed reference log-probs, padding-free
#      and shared-prefix DPO, gradient checkpointing and length grouping train exactly like the plain path,
#   5. extras (EXTRAS=0 skips them): QLoRA and LoRA SFT steps (bench variants sft_qlora, sft_lora: bitsandbytes),
#      and the SFT stage under DeepSpeed ZeRO-2 on one GPU (recipes/accelerate/zero2.yaml, tests/_dist_stage.py),
#   6. the baseline script's SFT, with what time is left.
# Run from the repository root; results land in $OUT (env.txt, throughput.log, throughput.jsonl,
# baseline.jsonl, tests.log, profiles/<variant>.txt: the top kernels of one untimed step, extras.log,
# zero2.json: what the ZeRO-2 rank's trainer ran under).
# VARIANTS="..." replaces the bench's variant list; BASELINE=0 and TESTS=0 skip 3, 4.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_DATASETS_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  bench/gpu/wheels/*.whl || { echo "no wheels: run bench/gpu/fetch_wheels.sh first and carry bench/gpu/wheels"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
python3 -c "
import torch, transformers, trl, datasets, accelerate, peft
print(torch.cuda.get_device_name(), '| torch', torch.__version__, '| transformers', transformers.__version__,
      '| trl', trl.__version__, '| datasets', datasets.__version__, '| accelerate', accelerate.__version__,
      '| peft', peft.__version__)" 2>&1 | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader | tee -a "$OUT/env.txt"

# Most important first. Each part's timeout is the smaller of its own and what is left before DEADLINE
# (seconds since this script started; the device call's limit is 590-600 s), so what finished is in $OUT.
DEADLINE=${DEADLINE:-570}
cap() {  # cap WANT [RESERVE]: WANT seconds, or what is left after RESERVE, at least 1
  local left=$(( DEADLINE - SECONDS - ${2:-0} )); (( left < $1 )) && echo $(( left > 1 ? left : 1 )) || echo "$1"
}
baseline() {  # the team's script (../shared/gpu/trl_baseline.py, copied by fetch_wheels.sh): plain TRL, bf16 weights
  [ -f bench/gpu/wheels/trl_baseline.py ] && [ "${BASELINE:-1}" = 1 ] || return 0
  VARIANT=$1 OUT=/tmp/anchor timeout "$(cap "$2")" python3 bench/gpu/wheels/trl_baseline.py 2>&1 | grep '^{' \
    | tee -a "$OUT/baseline.jsonl"
}

timeout "$(cap 225 200)" python3 bench/train_throughput.py --device cuda --timeout 100 --workdir /tmp/throughput \
  --out "$OUT/throughput.jsonl" --profile "$OUT/profiles" \
  --variants ${VARIANTS:-sft_trl sft_fast_liger dpo_trl dpo_padding_free dpo_padding_free_liger dpo_shared_prefix dpo_shared_prefix_liger dpo_fast sft_fast_liger_b16} \
  2>&1 | tee "$OUT/throughput.log"
echo "bench: exit ${PIPESTATUS[0]}"

baseline matmul 30
baseline dpo_default 130  # needed ~120 s on an H200

if [ "${TESTS:-1}" = 1 ]; then
  # Not here: the liger test (it loads a recipe, whose checks import packages the image lacks) and the
  # torch.compile test (minutes of compiling on a GPU for a model this small).
  timeout "$(cap 110)" python3 -m pytest -q -p no:cacheprovider tests/test_fast_paths.py tests/test_dpo_packing.py \
    -k "not liger_kernel_without and not torch_compile" > "$OUT/tests.log" 2>&1
  echo "tests: exit $?"; grep -E "passed|failed|^E " "$OUT/tests.log" | head -20
fi

if [ "${EXTRAS:-1}" = 1 ]; then
  timeout "$(cap 55)" python3 bench/train_throughput.py --device cuda --timeout 50 --workdir /tmp/extras \
    --out "$OUT/throughput.jsonl" --variants sft_qlora sft_lora 2>&1 | tee "$OUT/extras.log"
  # one process, ZeRO-2: optimizer state and gradients sharded over one rank (the engine and its config run)
  timeout "$(cap 60)" python3 -m accelerate.commands.launch --config_file recipes/accelerate/zero2.yaml \
    --num_processes 1 tests/_dist_stage.py sft /tmp/extras/model /tmp/zero2 >> "$OUT/extras.log" 2>&1
  echo "zero2: exit $?"; cp /tmp/zero2/rank0.json "$OUT/zero2.json" 2>/dev/null && cat "$OUT/zero2.json"
fi

baseline sft_padded 75
echo "done in $SECONDS s"
