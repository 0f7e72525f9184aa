#!/bin/bash
# The accelerator half of the pruning benchmark (issue #3), for a session lent a GPU.
#
# No 7B weights exist offline: bench_prune.py --random times a random-init model
# of Llama-7B's shapes (4 decoder layers; the cost is per block, so 32 layers
# take 8x as long), 128 x 2048 calibration tokens, ours vs the official algorithm
# on the same GPU in float32 without TF32. The GPU image has jax, torch,
# transformers, orbax and treescope but not penzai: carry its wheels, made here with
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl penzai==0.2.5 ordered-set
# then call the device tool with: carry [".whl"], timeout_s 540,
#   command "bash scripts/device_bench.sh"
# Results land in $OUT/bench_prune_gpu.json (and the printed table).
set -euo pipefail
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-results}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, torch.cuda.is_available())"
python3 scripts/bench_prune.py --random llama-7b --layers 4 --nsamples 128 --seqlen 2048 \
  --out "$out/bench_prune_gpu.json" 2>&1 | grep -v -i "warning"
