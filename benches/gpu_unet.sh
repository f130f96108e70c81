#!/usr/bin/env bash
# U-Net physics-only Darcy surrogate on a GPU: how far does it get with more compute than the
# CPU budget? (docs/experiments.md, run on a lent H200 on 2026-11-27.) Expects a stripped,
# xz-compressed release binary at .dev/varphi.xz and Vulkan loader .debs in .gl/ (see
# benches/gpu_check.sh); writes metrics and eval.json to $OUT.
set -u
source benches/gpu_setup.sh
base=configs/darcy-forward-unet.toml
mkdir -p /tmp/cfg
sed -e 's/^epochs = 36.*/epochs = 150/' -e 's/anneal_steps = 1500/anneal_steps = 4000/' $base > /tmp/cfg/unet-long.toml
sed -e 's/channels = \[8, 16, 32\]/channels = [32, 64, 128]/' /tmp/cfg/unet-long.toml > /tmp/cfg/unet-big.toml
for name in unet-long unet-big; do
  s=$(date +%s)
  timeout 200 /tmp/varphi train /tmp/cfg/$name.toml --backend wgpu --out /tmp/$name -q 2>&1 | tail -3
  echo "$name train wall $(( $(date +%s) - s )) s"
  cp /tmp/$name/metrics.csv $OUT/$name-metrics.csv
  timeout 60 /tmp/varphi eval /tmp/$name --backend wgpu 2>&1 | tail -12
  cp /tmp/$name/eval.json $OUT/$name-eval.json
done
