#!/usr/bin/env bash
# One-shot GPU check of the UQ-VAE with a learned AR(1) noise model, Gaussian and flow q(s|y):
# configs/pendulum-uqvae-surrogate.toml --quick (20 epochs) trained and evaluated on wgpu.
# Expects .dev/varphi.xz and .gl/*.deb (benches/gpu_setup.sh); writes logs to $OUT.
set -u
source benches/gpu_setup.sh
root=$PWD
cd /tmp
sed -e 's/^\[model\]/[model]\nposterior = "flow"\nflow_layers = 4/' $root/configs/pendulum-uqvae-surrogate.toml > /tmp/flow.toml
for c in $root/configs/pendulum-uqvae-surrogate.toml /tmp/flow.toml; do
  n=$(basename $c .toml)
  (time timeout 150 /tmp/varphi train $c --quick --backend wgpu --out /tmp/$n -q) 2>&1 | tee $OUT/$n.txt
  timeout 60 /tmp/varphi eval /tmp/$n --backend wgpu 2>&1 | tee -a $OUT/$n.txt
done
