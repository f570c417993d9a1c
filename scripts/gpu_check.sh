#!/usr/bin/env bash
# One prepared run on a machine with an NVIDIA GPU (the device tool gives one such run per
# session): the CUDA tests at their shapes on the real GPU, LeNet trained on Fashion-MNIST on
# the GPU against the CPU's accuracy (in float32 and with float16 activations), and the GPU
# benchmark (float32, and float16 buffers against PyTorch's autocast).  Results go under $OUT
# (default ./gpu-results).  It installs nothing from the network: packages the machine lacks come as
# wheels in .whl/ (scripts/gpu_wheels.sh downloads them on a machine that reaches PyPI).
#
#   bash scripts/gpu_check.sh            # everything (about 8 minutes on an H200)
#   STEPS=tests bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
STEPS=${STEPS:-"tests train half bench bench16"}
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
  case $step in
    tests)
      timeout 240 python3 -m pytest -q -m cuda -x -p no:cacheprovider tests/test_cuda_layers.py \
        tests/test_cuda_solver.py tests/test_cuda_net.py tests/test_cuda_fusion.py tests/test_cuda_utility.py \
        tests/test_cuda_precision.py \
        2>&1 | tail -40 > "$OUT/tests.txt";;
    train)
      # a short LeNet recipe on the GPU (the full one is 15,000 iterations)
      timeout 200 python3 -m netspec train models/lenet/train_val.yaml --device cuda --run-dir /tmp/gpu-lenet -q \
        2>&1 | grep -E "Test net output|Iteration [0-9]+ \(|error|Optimization" | tail -30 > "$OUT/train.txt";;
    half)
      # the LeNet recipe with float16 activations and gradients (dynamic loss scale) on the GPU
      timeout 200 python3 -m netspec train solvers/lenet_fp16.yaml --device cuda --run-dir /tmp/gpu-lenet-fp16 -q \
        2>&1 | grep -E "Precision|Test net output|overflowed|Iteration [0-9]+ \(|error|Optimization" | tail -30 \
        > "$OUT/half.txt";;
    bench)
      timeout 240 python3 scripts/bench_gpu.py --rounds 2 --out "$OUT/bench.json" 2>&1 | tail -20 > "$OUT/bench.txt";;
    bench16)
      # float16 activation buffers against PyTorch's autocast, with the memory each holds
      timeout 150 python3 scripts/bench_gpu.py --rounds 2 --precision float16 --nets lenet-512,vgg_small-64,alexnet-128 \
        --out "$OUT/bench16.json" 2>&1 | tail -20 > "$OUT/bench16.txt";;
  esac
done
ls -la "$OUT"
