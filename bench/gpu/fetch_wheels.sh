#!/usr/bin/env bash
# Downloads (here, where PyPI is reachable) the wheels the GPU image lacks, for its Python 3.12, into
# bench/gpu/wheels/ (git-ignored, ~53 MB; a device call carries at most 64 MiB with the checkout): run.sh
# installs them there with pip --no-index --no-deps.
# The image already has torch, transformers, accelerate, peft, pyarrow, pandas, xxhash, fsspec, huggingface-hub,
# msgpack, ninja, py-cpuinfo, einops, psutil (KINDS.md's package list in the device notes).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../../.venv/bin/python}
download() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d wheels "$@"
}
# the stages' trainers, and Liger's kernels
download trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 liger-kernel==0.8.5
# QLoRA (run.sh's extras: the sft_qlora variant): bitsandbytes' CUDA kernels, 43 MB of the total
download bitsandbytes==0.50.2
# DeepSpeed ZeRO-2 on one GPU (run.sh's extras): PyPI has only its source; built here without its compiled
# ops (DS_BUILD_OPS=0, pure Python), with what it needs that the image lacks
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps -w wheels deepspeed==0.19.8
download hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
ls wheels
# the team's baseline script travels with them (run.sh runs it on the same card, after the stages' bench)
cp ../../../shared/gpu/trl_baseline.py wheels/ 2>/dev/null || echo "no ../shared/gpu/trl_baseline.py: the baseline part is skipped"
