#!/usr/bin/env bash
# One-shot GPU check of the forward-model VI runs on wgpu: heat-physvae and pendulum-physvae
# (--quick), trained and evaluated on the GPU. Expects .dev/varphi.xz and .gl/*.deb like
# benches/gpu_check.sh; writes the logs to $OUT.
set -u
source benches/gpu_setup.sh
root=$PWD
cd /tmp
for c in heat-physvae pendulum-physvae; do
  (time timeout 80 /tmp/varphi train $root/configs/$c.toml --quick --backend wgpu --out /tmp/$c -q) 2>&1 | tee $OUT/$c.txt
  timeout 30 /tmp/varphi eval /tmp/$c --backend wgpu 2>&1 | tee -a $OUT/$c.txt
done
