#!/usr/bin/env bash
# A separate environment, .venv-ofa, to run the `ofa` backend (RiVEG's OFA through ModelScope) for
# real: tests/test_ofa.py. ModelScope's OFA preprocessor imports torchvision, and PyPI's torchvision
# only loads beside the torch it was built with, so this environment takes a matching pair (a CUDA
# build of torch, which also runs on the CPU) instead of .venv's CPU torch. About 6.5 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-ofa
pip=".venv-ofa/bin/pip"
$pip install -q --upgrade pip
$pip install -q "torch==2.14.1" "torchvision==0.29.1"
# The pins again, so nothing in the extra can swap torch for another build; scikit-image for the
# test's photos.
$pip install -q -e ".[ofa]" pytest scikit-image "torch==2.14.1" "torchvision==0.29.1"
echo "ready: .venv-ofa (run: .venv-ofa/bin/python -m pytest -q -p no:cacheprovider tests/test_ofa.py)"
