#!/usr/bin/env bash
# Downloads (here, where PyPI is reachable) the wheels the GPU image lacks, for its Python 3.12, into
# bench/gpu/wheels/ (git-ignored, ~2.7 MB): run.sh installs them there with pip --no-index --no-deps.
# The image already has torch, transformers, accelerate, peft, pyarrow, pandas, xxhash, fsspec, huggingface-hub.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../../.venv/bin/python}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels \
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 liger-kernel==0.8.5
ls wheels
# the team's baseline script travels with them (run.sh runs it on the same card, after the stages' bench)
cp ../../../shared/gpu/trl_baseline.py wheels/ 2>/dev/null || echo "no ../shared/gpu/trl_baseline.py: the baseline part is skipped"
