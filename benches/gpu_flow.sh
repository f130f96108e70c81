#!/usr/bin/env bash
# One-shot GPU check of the flow posterior on wgpu: quickstart.toml and quickstart-flow.toml
# (--quick), trained and evaluated on the GPU. Expects .dev/varphi.xz (a stripped, xz-packed
# `target/release/varphi`) and .gl/*.deb like benches/gpu_check.sh; writes logs to $OUT.
set -u
source benches/gpu_setup.sh
root=$PWD
cd /tmp
for c in quickstart quickstart-flow; do
  (time timeout 100 /tmp/varphi train $root/configs/$c.toml --quick --backend wgpu --out /tmp/$c -q) 2>&1 | tee $OUT/$c.txt
  timeout 40 /tmp/varphi eval /tmp/$c --backend wgpu 2>&1 | tee -a $OUT/$c.txt
done
