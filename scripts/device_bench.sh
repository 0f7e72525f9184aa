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
#   command "bash scripts/device_bench.sh [prune|memory]"   (no argument: both)
# Results land in $OUT/bench_prune_gpu.json and $OUT/bench_memory_gpu.jsonl (and
# the printed tables). LAYERS=8 bash scripts/device_bench.sh memory limits the
# 7B and 13B shapes to 8 blocks where the full models take too long.
set -euo pipefail
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-results}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, torch.cuda.is_available())"
part="${1:-all}"
if [[ "$part" == all || "$part" == prune ]]; then
python3 scripts/bench_prune.py --random llama-7b --layers 4 --nsamples 128 --seqlen 2048 \
  --out "$out/bench_prune_gpu.json" 2>&1 | grep -v -i "warning"
fi
[[ "$part" == all || "$part" == memory ]] || exit 0

# Issue 21: time and measured peak device memory per device of prunes larger
# than one accelerator, random-init bfloat16 weights of Llama-2 shapes built by
# jaxprune's own loader (no downloads), 128 x 2048 random tokens, each run in
# its own process (so memory_stats' peak is its own). Llama-2-70B is limited
# to 4 blocks (memory per device does not grow with the block count under
# --params host). Results: one JSON line per run in $out/bench_memory_gpu.jsonl.
# The computed figures these should be compared with: docs/cluster.md#memory.
: > "$out/bench_memory_gpu.jsonl"
for shape in llama-2-7b llama-2-13b; do
  for params in host device; do
    python3 scripts/bench_memory.py --shape "$shape" ${LAYERS:+--layers "$LAYERS"} --params "$params" \
      --nsamples 128 --seqlen 2048 \
      --out "$out/bench_memory_gpu.jsonl" 2>&1 | grep -v -i "warning" || echo "$shape --params $params failed"
  done
done
python3 scripts/bench_memory.py --shape llama-2-70b --layers 4 --params host --nsamples 128 --seqlen 2048 \
  --out "$out/bench_memory_gpu.jsonl" 2>&1 | grep -v -i "warning" || echo "llama-2-70b (4 blocks) failed"
python3 - "$out/bench_memory_gpu.jsonl" <<'PY'
import json, sys
print(f"{'shape':<12} {'layers':>6} {'params':<7} {'prune s':>8}  peak device GB per device")
for line in open(sys.argv[1]):
  r = json.loads(line)
  peaks = " ".join(f"{b / 1e9:.1f}" for b in r["memory"]["peak_device_bytes"].values())
  print(f"{r['shape']:<12} {r['layers']:>6} {r['params']:<7} {r['prune_seconds']:>8.1f}  {peaks}")
PY
