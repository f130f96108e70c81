#!/usr/bin/env bash
# Train every shipped train config with --quick and evaluate it, writing OUT/<config>/eval.json
# and OUT/times.txt (train and eval wall time per config). Run it with two binaries (e.g. before
# and after a change, each in its own checkout) and compare the eval.json files value by value.
#   bash benches/quick_eval_all.sh target/release/varphi . /tmp/quick-evals
set -u
bin=$(realpath "$1"); repo=$2; out=$(realpath -m "$3")
mkdir -p "$out"
cd "$repo"
mkdir -p data
# darcy-dgp-prior trains on generated coefficient fields.
[ -f data/darcy-fields.npz ] || "$bin" data darcy --n 4000 --grid 32 --obs none -o data/darcy-fields.npz -q
for cfg in configs/*.toml; do
  c=$(basename "$cfg" .toml)
  grep -q '^\[model\]' "$cfg" || continue   # `varphi infer` configs have no [model]
  rm -rf "${out:?}/$c"
  s=$(date +%s.%N)
  "$bin" train "$cfg" --quick --out "$out/$c" -q > "$out/$c.train.log" 2>&1 || echo "TRAIN FAIL $c"
  m=$(date +%s.%N)
  "$bin" eval "$out/$c" > "$out/$c.eval.log" 2>&1 || echo "EVAL FAIL $c"
  e=$(date +%s.%N)
  echo "$c train $(echo "$m - $s" | bc) s, eval $(echo "$e - $m" | bc) s" | tee -a "$out/times.txt"
done
