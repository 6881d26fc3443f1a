#!/usr/bin/env bash
# Installs what is needed, then runs a learn task and a predict task with the model it
# produced, on the built-in local storage (a folder) and orchestrator (a ledger file),
# with the example problem and submission of examples/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

demo=${DEMO_DIR:-$PWD/.demo}
store=$demo/storage
rm -rf "$demo"
mkdir -p "$store"

# Fixed ids, so the files below are easy to find by hand.
workflow=11111111-1111-4111-8111-111111111111
algo=22222222-2222-4222-8222-222222222222
train1=33333333-3333-4333-8333-333333333331
train2=33333333-3333-4333-8333-333333333332
test1=44444444-4444-4444-8444-444444444441
predict_data=55555555-5555-4555-8555-555555555551
model=66666666-6666-4666-8666-666666666661
learn_task=77777777-7777-4777-8777-777777777771
predict_task=88888888-8888-4888-8888-888888888881

put() { # kind uuid file
  mkdir -p "$store/$1/$2"
  cp "$3" "$store/$1/$2/blob"
}
sh examples/pack-context.sh examples/problem "$demo/problem.tar.gz"
sh examples/pack-context.sh examples/submission "$demo/submission.tar.gz"
put problem "$workflow" "$demo/problem.tar.gz"
put algo "$algo" "$demo/submission.tar.gz"
put data "$train1" examples/data/train-1.csv
put data "$train2" examples/data/train-2.csv
put data "$test1" examples/data/test.csv
put data "$predict_data" examples/data/predict.csv

cat >"$demo/learn.json" <<JSON
{"uuid": "$learn_task", "problem": "$workflow", "workflow": "$workflow", "algo": "$algo",
 "train_data": ["$train1", "$train2"], "test_data": ["$test1"],
 "model_start": null, "model_end": "$model", "rank": 0, "worker": null, "status": "todo"}
JSON
cat >"$demo/predict.json" <<JSON
{"uuid": "$predict_task", "problem": "$workflow", "workflow": "$workflow",
 "model": "$model", "data": "$predict_data", "worker": null, "status": "todo"}
JSON

# runc: podman's default runtime, crun, cannot start containers on hybrid cgroup hosts.
if [ -z "${COMPUTE_WORKER_OCI_RUNTIME:-}" ] && command -v runc >/dev/null; then
  export COMPUTE_WORKER_OCI_RUNTIME=runc
fi
export COMPUTE_WORKER_STATE_DIR=$demo/state
export COMPUTE_WORKER_STORAGE_DIR=$store
export COMPUTE_WORKER_ORCHESTRATOR_LEDGER=$demo/orchestrator.jsonl

echo "== learn task (storage: $store)"
./bin/run.js task exec "$demo/learn.json"
echo
echo "== predict task with model $model"
./bin/run.js task exec "$demo/predict.json"
prediction=$(ls "$store/prediction")
echo
echo "== prediction $prediction (first lines)"
head -n 5 "$store/prediction/$prediction/blob"
echo
echo "== orchestrator ledger ($demo/orchestrator.jsonl)"
cat "$demo/orchestrator.jsonl"
