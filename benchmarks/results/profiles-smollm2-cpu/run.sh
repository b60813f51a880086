#!/usr/bin/env bash
# Issue 36's experiment on the SmolLM2 triple, after `mi-mergekit demo --pair smollm2 --slots 128 --seed 0`.
set -euo pipefail
D=/work/repro/smollm2-demo
E=/work/repro/exp36
MI="/work/main/.venv/bin/mi-mergekit"
export PYTHONPATH=${CODE:-/work/wt-36} HF_HUB_OFFLINE=1
EVAL=(--benchmark boxed --grader math --grading strict --decoding thinking --max-new-tokens 352 --seed 0
      --slots 128 --prompt-batch 25 --no-progress)
mkdir -p $E/recipes $E/models $E/runs $E/search
t() { /usr/bin/time -f "%e s wall, %U+%S s CPU" -a -o $E/times.txt "$@"; }
# 1. zero-shot estimators at mean λ 0.6 and 0.8 (the curve's knee and the paper's λ); acm reads 16 unlabeled
#    calibration prompts (disjoint from the held-out questions)
for mean in 0.6 0.8; do
  for est in divergence fisher acm; do
    name=${est}_${mean}
    [ -f $E/recipes/$name.yaml ] && continue
    echo "== profile $name" >> $E/times.txt
    extra=(); [ $est = acm ] && extra=(--prompts $D/calibration.jsonl --column question --n-prompts 16)
    t $MI profile $D/recipes/mi_0.8.yaml --estimator $est --mean-lambda $mean "${extra[@]}" --out $E/recipes/$name.yaml
  done
done
# 2. searched profiles on the calibration split (50 problems x 2 samples), under the token budget of the
#    static λ 0.8 on that split (the routing experiment's calibration run)
BUDGET=$(python3 -c "import json;print(round(json.load(open('$D/runs/calibration/mi_0.8/metrics.json'))['tokens_mean'],1))")
echo "budget $BUDGET" >> $E/times.txt
for fam in ramp modules; do
  [ -f $E/search/$fam/profile.yaml ] && continue
  echo "== search $fam" >> $E/times.txt
  t $MI find-lambda $D/recipes/mi_0.8.yaml --profile $fam --target "tokens<=$BUDGET" --grid 2 --max-probes 9 \
     --out $E/search/$fam --dataset $D/calibration.jsonl -n 2 "${EVAL[@]}"
  cp $E/search/$fam/profile.yaml $E/recipes/searched_$fam.yaml
done
# 3. merge every profile in one pass, evaluate each on the demo's 50 held-out problems x 4 samples
if [ ! -f $E/models/.done ]; then
  echo "== sweep" >> $E/times.txt
  t $MI sweep $E/recipes/*.yaml $E/models --overwrite && touch $E/models/.done
fi
for m in $E/models/*/; do
  name=$(basename $m)
  [ -f $E/runs/$name/metrics.json ] && continue
  echo "== eval $name" >> $E/times.txt
  t $MI eval --model $m --dataset $D/heldout.jsonl -n 4 --label $name --out $E/runs/$name "${EVAL[@]}"
done
# the demo's windows and module ablations graded again, so their metrics carry their λ profile (mean λ)
for r in $D/runs/mi_0.8_*; do
  grep -q '"profile"' $r/metrics.json || $MI eval --grade-only --out $r --dataset $D/heldout.jsonl --model x --no-progress > /dev/null
done
# 4. the frontier: every static λ, the two sides, TA, TIES, the routers, the windows and ablations, the profiles
runs=($D/runs/mi_* $D/runs/instruct $D/runs/ta $D/runs/ties $D/runs/route_* $E/runs/*)
$MI report "${runs[@]}" --out $E/report --baseline ta --baseline ties --thinking-run mi_1
