#!/bin/sh
# Entry point of the example submission, a nearest-centroid classifier:
#   run.sh -V /data -T train     trains on /data/train/* (continuing from
#                                /data/model/model.csv when it exists), saves the
#                                model, predicts /data/train/* and /data/test/*
#   run.sh -V /data -T predict   predicts /data/test/* with the saved model
# Predictions go to <folder>/pred/<same file name>. It writes only under the data
# folder, so it runs as any user on a read-only root filesystem.
set -eu

here=$(dirname "$0")

usage() {
  echo "usage: run.sh -V DATA_FOLDER -T train|predict" >&2
  exit 2
}

data=
task=
while [ $# -gt 0 ]; do
  case $1 in
    -V) [ $# -ge 2 ] || usage; data=$2; shift 2 ;;
    -T) [ $# -ge 2 ] || usage; task=$2; shift 2 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$data" ] && [ -n "$task" ] || usage

model="$data/model/model.csv"

# predict_folder FOLDER: one prediction file per data file, in FOLDER/pred.
predict_folder() {
  mkdir -p "$1/pred"
  for f in "$1"/*; do
    [ -f "$f" ] || continue
    name=${f##*/}
    awk -v mode=predict -v model="$model" -f "$here/centroid.awk" "$f" >"$1/pred/$name"
    echo "predicted $(($(wc -l <"$1/pred/$name") - 1)) rows of $name"
  done
}

model_rows() {
  awk -F, 'NR > 1 { n += $2 } END { print n + 0 }' "$model"
}

case $task in
  train)
    set --
    for f in "$data/train"/*; do
      if [ -f "$f" ]; then set -- "$@" "$f"; fi
    done
    if [ $# -eq 0 ]; then
      echo "run.sh: no training data in $data/train" >&2
      exit 1
    fi
    start=
    if [ -f "$model" ]; then
      start=$model
      echo "continuing training from the saved model ($(model_rows) rows so far)"
    fi
    mkdir -p "$data/model"
    # Write beside the old model and rename: a reader never sees half a model.
    if ! awk -v mode=train -v model="$start" -f "$here/centroid.awk" "$@" >"$model.new"; then
      rm -f "$model.new"
      exit 1
    fi
    mv -f "$model.new" "$model"
    rows=$(model_rows)
    classes=$(awk -F, 'NR > 1 { printf "%s%s", sep, $1; sep = " " }' "$model")
    echo "nearest-centroid classifier: per-class row counts and feature sums in model.csv (class,count,sum_<feature>...); trained on $rows rows; classes: $classes" >"$data/model/README"
    echo "trained on $# file(s); the model now holds $rows rows of classes $classes"
    predict_folder "$data/train"
    if [ -d "$data/test" ]; then predict_folder "$data/test"; fi
    ;;
  predict)
    if [ ! -f "$model" ]; then
      echo "run.sh: no model at $model" >&2
      exit 1
    fi
    if [ ! -d "$data/test" ]; then
      echo "run.sh: no test folder at $data/test" >&2
      exit 1
    fi
    predict_folder "$data/test"
    ;;
  *)
    echo "run.sh: unknown task: $task (expected train or predict)" >&2
    exit 2
    ;;
esac
