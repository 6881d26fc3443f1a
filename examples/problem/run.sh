#!/bin/sh
# Entry point of the example problem workflow (trusted):
#   run.sh -T detarget -i /hidden_data -s /submission_data
#       copies each hidden test file /hidden_data/test/<uuid> to
#       /submission_data/test/<uuid> without its `label` column
#   run.sh -T perf -i /hidden_data -s /submission_data
#       scores /submission_data/{test,train}/pred/<uuid> (or pred_<uuid>) against
#       the labels of /hidden_data/test/<uuid> and /submission_data/train/<uuid>,
#       and writes /hidden_data/perf/performance.json
# Flags may come in any order. Exit 2 on a usage error, 1 on bad data.
set -eu

here=$(dirname "$0")

usage() {
  echo "usage: run.sh -T detarget|perf -i HIDDEN_FOLDER -s SUBMISSION_FOLDER" >&2
  exit 2
}

die() {
  echo "run.sh: $*" >&2
  exit 1
}

task=
hidden=
submission=
while [ $# -gt 0 ]; do
  case $1 in
    -T) [ $# -ge 2 ] || usage; task=$2; shift 2 ;;
    -i) [ $# -ge 2 ] || usage; hidden=$2; shift 2 ;;
    -s) [ $# -ge 2 ] || usage; submission=$2; shift 2 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage ;;
  esac
done
case $task in
  detarget | perf) ;;
  *) echo "run.sh: unknown task: '$task' (expected detarget or perf)" >&2; exit 2 ;;
esac
[ -n "$hidden" ] && [ -n "$submission" ] || usage

# Data files are named by their uuid; anything else would not be safe in JSON.
valid_name() {
  case $1 in
    '' | *[!A-Za-z0-9._-]*) return 1 ;;
  esac
}

# accuracy CORRECT ROWS: a JSON number with at most 4 decimals (0.9333, 1, 0).
accuracy() {
  awk -v c="$1" -v n="$2" 'BEGIN { s = sprintf("%.4f", c / n); sub(/0+$/, "", s); sub(/\.$/, "", s); print s }'
}

# pred_file FOLDER NAME: the submission's prediction for FOLDER/NAME.
pred_file() {
  for p in "$1/pred/$2" "$1/pred/pred_$2"; do
    if [ -f "$p" ]; then
      echo "$p"
      return 0
    fi
  done
  die "missing prediction for $1/$2: expected $1/pred/$2 (or $1/pred/pred_$2)"
}

# score FOLDER NAME TARGETS: prints "<correct> <rows> <accuracy>".
score() {
  pred=$(pred_file "$1" "$2") || exit 1
  result=$(awk -f "$here/score.awk" "$3" "$pred") || die "bad prediction file $pred"
  set -- $result
  echo "$1 $2 $(accuracy "$1" "$2")"
}

detarget() {
  mkdir -p "$submission/test"
  n=0
  for f in "$hidden/test"/*; do
    [ -f "$f" ] || continue
    name=${f##*/}
    valid_name "$name" || die "bad test file name: $name"
    awk -F, '
      { sub(/\r$/, "") }
      NR == 1 { for (j = 1; j <= NF; j++) if ($j == "label") drop = j }
      NR == 1 && !drop { print FILENAME ": no label column in the header" > "/dev/stderr"; exit 1 }
      {
        line = sep = ""
        for (j = 1; j <= NF; j++) if (j != drop) { line = line sep $j; sep = "," }
        print line
      }' "$f" >"$submission/test/$name" || die "cannot detarget $f"
    echo "detargeted $name"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "no test data in $hidden/test"
}

perf() {
  out="$hidden/perf/performance.json"
  # A failed run must not leave an older score behind.
  rm -f "$out" "$out.tmp"
  correct=0
  rows=0
  test_perf=
  for f in "$hidden/test"/*; do
    [ -f "$f" ] || continue
    name=${f##*/}
    valid_name "$name" || die "bad test file name: $name"
    s=$(score "$submission/test" "$name" "$f") || exit 1
    set -- $s
    correct=$((correct + $1))
    rows=$((rows + $2))
    test_perf="$test_perf${test_perf:+, }\"$name\": $3"
    echo "test $name: accuracy $3 ($1 of $2)"
  done
  [ "$rows" -gt 0 ] || die "no test data in $hidden/test"
  train_perf=
  for f in "$submission/train"/*; do
    [ -f "$f" ] || continue
    name=${f##*/}
    if ! valid_name "$name"; then
      echo "run.sh: ignoring unexpected train file name: $name" >&2
      continue
    fi
    s=$(score "$submission/train" "$name" "$f") || exit 1
    set -- $s
    train_perf="$train_perf${train_perf:+, }\"$name\": $3"
    echo "train $name: accuracy $3 ($1 of $2)"
  done
  overall=$(accuracy "$correct" "$rows")
  mkdir -p "$hidden/perf"
  printf '{"perf": %s, "train_perf": {%s}, "test_perf": {%s}}\n' \
    "$overall" "$train_perf" "$test_perf" >"$out.tmp"
  mv -f "$out.tmp" "$out"
  echo "performance: $overall on $rows test rows"
}

$task
