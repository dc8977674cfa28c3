#!/usr/bin/env bash
# GPU check (one H100, under 5 minutes): a ~1.3B MPT with flash attention and bf16 through scripts/train.py,
# pre-training on the demo corpus, then instruction tuning with recgpt's packing; prints tokens/s and model FLOPs
# utilisation (MFU) from composer's speed monitor. (llm-foundry turns FSDP off on one GPU, "Reverting to DDP", so
# the single-GPU check runs without it; the 7B recipes' FSDP needs several GPUs.)
#
# The lent GPU machines run their own torch (2.11, CUDA 13) and reach no network. The pinned stack cannot travel
# whole (torch 2.7 with its CUDA libraries is GBs, over the 64 MiB a call may carry), so this check runs
# llm-foundry 0.22 and composer 0.32 on the machine's torch, with their pure-Python wheels carried in .whl/:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#     llm-foundry==0.22.0 mosaicml==0.32.1 mosaicml-streaming==0.12.0 transformers==4.51.3 tokenizers==0.21.4 \
#     omegaconf==2.3.0 catalogue==2.0.10 torch-optimizer==0.3.0 pytorch-ranger==0.1.1 coolname==2.2.0 \
#     py-cpuinfo==9.0.0 mosaicml-cli==0.7.1 --platform manylinux2014_x86_64   (tokenizers: a manylinux wheel)
# Flash attention: flash-attn has no wheel for that torch, so MPT's `attn_impl: flash` cannot load there; the
# check then uses `attn_impl: torch` and says so. Not yet run: this project's sessions so far had no GPU.
# Usage (on the GPU machine, from the repository root): bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
ATTN=flash
python3 -c "import flash_attn" 2>/dev/null || ATTN=torch
work=$(mktemp -d)
python3 - "$work" <<'PY'
import sys
from pathlib import Path

from recgpt.config import load_config
from recgpt.data.prepare import PrepareConfig, prepare

out = Path(sys.argv[1]) / "data"
prepare(load_config(PrepareConfig, "configs/data/movielens-100k.yaml",
                    [f"output={out}", "max_seq_len=2048", "tokenizer.train_vocab_size=8192", "max_users=400"]))
PY
common=(variables.data_dir="$work/data" precision=amp_bf16 model.d_model=2048 model.n_heads=16 model.n_layers=24
        model.vocab_size=8192 variables.max_seq_len=2048 model.attn_config.attn_impl=$ATTN
        model.loss_fn=torch_crossentropy global_train_batch_size=16 device_train_microbatch_size=8
        console_log_interval=5ba callbacks.speed_monitor.window_size=5 callbacks.speed_monitor.gpu_flops_available=989e12)
echo "== pre-training, ~1.3B MPT, attn_impl=$ATTN"
composer -n 1 scripts/train.py configs/demo/pre-training.yaml "${common[@]}" variables.run_dir="$work/pt" \
  max_duration=30ba 2>&1 | grep -E "throughput/tokens_per_sec|mfu|Error" | tail -4
echo "== instruction tuning with packing"
composer -n 1 scripts/train.py configs/demo/fine-tuning.yaml variables.data_dir="$work/data" precision=amp_bf16 \
  variables.pretrained="$work/pt/hf/huggingface/final" variables.run_dir="$work/ft" variables.max_seq_len=2048 \
  model.config_overrides.attn_config.attn_impl=$ATTN global_train_batch_size=16 device_train_microbatch_size=8 \
  max_duration=20ba eval_interval=0 console_log_interval=5ba callbacks.speed_monitor.window_size=5 \
  callbacks.speed_monitor.gpu_flops_available=989e12 2>&1 | grep -E "throughput/tokens_per_sec|mfu|Error" | tail -4
