#!/usr/bin/env bash
# One-shot GPU check: varphi's wgpu backend vs PyTorch CUDA on the benchmark VAE, and the
# quickstart trained on wgpu. Writes everything to $OUT. Expects a stripped, xz-compressed
# release binary at .dev/varphi.xz and Vulkan loader .debs in .gl/ (see docs/benchmarks.md).
set -u
source benches/gpu_setup.sh
for b in 128 1024; do
  timeout 150 /tmp/varphi bench --backend wgpu --steps 200 --warmup 30 --batch $b 2>&1 | tee -a $OUT/bench.txt
  timeout 60 python3 benches/pytorch_bench.py --workload mlp-vae --device cuda --steps 200 --warmup 30 --batch $b 2>&1 | tee -a $OUT/bench.txt
done
cd /tmp && (time timeout 120 /tmp/varphi train $OLDPWD/configs/quickstart.toml --backend wgpu --out /tmp/q -q) 2>&1 | tee $OUT/quickstart.txt
tail -2 /tmp/q/metrics.csv | tee -a $OUT/quickstart.txt
