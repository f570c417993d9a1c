#!/usr/bin/env bash
# One prepared run on a machine with an NVIDIA GPU (the device tool gives one such run per
# session): the CUDA tests at their shapes on the real GPU, LeNet trained on Fashion-MNIST on
# the GPU against the CPU's accuracy (in float32 and with float16 activations), and the GPU
# benchmark (float32, and float16 buffers against PyTorch's autocast).  Results go under $OUT
# (default ./gpu-results).  It installs nothing from the network: packages the machine lacks come as
# wheels in .whl/ (scripts/gpu_wheels.sh downloads them on a machine that reaches PyPI).
#
#   bash scripts/gpu_check.sh            # everything, within BUDGET seconds (default 540)
#   STEPS=tests bash scripts/gpu_check.sh
#
# The steps run in order of what matters most (the tests, the benchmark table, the LeNet runs,
# the float16 benchmark); each has its own time limit, cut to what is left of BUDGET, so one
# call fits the device tool's 10 minutes a command.  A step with no time left is listed in
# $OUT/skipped.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
STEPS=${STEPS:-"tests bench train half bench16"}
BUDGET=${BUDGET:-540}
T0=$SECONDS
limit() {   # the step's own limit, or what is left of BUDGET when that is less (0: skip it)
  local want=$1 left=$((BUDGET - (SECONDS - T0)))
  if ((left < want)); then want=$left; fi
  if ((want < 20)); then want=0; fi
  echo $want
}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
unset NUMBA_ENABLE_CUDASIM
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import cupy, numba_cuda, numba; print('cupy', cupy.__version__, 'numba', numba.__version__)" >> "$OUT/gpu.txt" 2>&1
# Fashion-MNIST travels as .data/fashion-mnist/*.gz (30 MB; copy /usr/share/datasets/fashion-mnist there)
[ -d .data/fashion-mnist ] && export NETSPEC_DATA="$PWD/.data"
for step in $STEPS; do
  t=$(limit "$(case $step in tests) echo 240;; bench) echo 200;; train|half) echo 120;; *) echo 120;; esac)")
  if ((t == 0)); then echo "$step: no time left of BUDGET=$BUDGET s" >> "$OUT/skipped.txt"; continue; fi
  case $step in
    tests)
      timeout "$t" python3 -m pytest -q -m cuda --maxfail=25 -p no:cacheprovider tests/test_cuda_layers.py \
        tests/test_cuda_solver.py tests/test_cuda_net.py tests/test_cuda_fusion.py tests/test_cuda_utility.py \
        tests/test_cuda_precision.py \
        2>&1 | tail -40 > "$OUT/tests.txt";;
    train)
      # a short LeNet recipe on the GPU (the full one is 15,000 iterations)
      timeout "$t" python3 -m netspec train models/lenet/train_val.yaml --device cuda --run-dir /tmp/gpu-lenet -q \
        2>&1 | grep -E "Test net output|Iteration [0-9]+ \(|error|Optimization" | tail -30 > "$OUT/train.txt";;
    half)
      # the LeNet recipe with float16 activations and gradients (dynamic loss scale) on the GPU
      timeout "$t" python3 -m netspec train solvers/lenet_fp16.yaml --device cuda --run-dir /tmp/gpu-lenet-fp16 -q \
        2>&1 | grep -E "Precision|Test net output|overflowed|Iteration [0-9]+ \(|error|Optimization" | tail -30 \
        > "$OUT/half.txt";;
    bench)
      timeout "$t" python3 scripts/bench_gpu.py --rounds 2 --out "$OUT/bench.json" 2>&1 | tail -20 > "$OUT/bench.txt";;
    bench16)
      # float16 activation buffers against PyTorch's autocast, with the memory each holds
      timeout "$t" python3 scripts/bench_gpu.py --rounds 2 --precision float16 --nets lenet-512,vgg_small-64,alexnet-128 \
        --out "$OUT/bench16.json" 2>&1 | tail -20 > "$OUT/bench16.txt";;
  esac
done
ls -la "$OUT"
