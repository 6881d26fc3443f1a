#!/usr/bin/env bash
# The floor of a learn task: the engine commands a learn task needs, run back to back by
# hand, with the worker's hardening flags, images and data. No worker, no checks: what the
# engine alone costs. scripts/bench.mjs times it against `compute-worker task exec`.
#
#   bench-floor.sh ENGINE FLAGS_FILE WORKFLOW_IMAGE SUBMISSION_IMAGE TRAIN_URL TEST_URL PRED_URL
#
# ENGINE is podman or docker. FLAGS_FILE holds the hardening and limit flags, one per line
# (the worker's own, written by bench.mjs). The URLs serve tar archives (Basic Auth from
# BENCH_AUTH=user:password): the train data with an empty pred/, the test data, and an
# empty pred/ alone (the mount point of the test predictions).
set -euo pipefail
engine=$1 flags_file=$2 workflow=$3 submission=$4 train_url=$5 test_url=$6 pred_url=$7
mapfile -t hard <"$flags_file"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

declare -A vol
for role in hidden perf train train_pred test test_pred model; do
  vol[$role]=$("$engine" volume create)
done

fill() { # volume url
  if [ "$engine" = podman ]; then
    curl -sSf -u "$BENCH_AUTH" "$2" | podman volume import "$1" -
  else
    curl -sSf -u "$BENCH_AUTH" "$2" |
      docker run --rm -i --network none -v "$1:/mnt" --entrypoint /bin/tar "$workflow" -x -C /mnt
  fi
}
# podman gives an empty volume to the container's user on its first mount; docker leaves it
# root's, so the volumes the containers write are given to that user first (as the worker
# does), in one helper run.
if [ "$engine" = docker ]; then
  user=1000:1000
  for i in "${!hard[@]}"; do
    case ${hard[$i]} in
      --user) user=${hard[$((i + 1))]} ;;
      --user=*) user=${hard[$i]#--user=} ;;
    esac
  done
  owned=()
  for role in perf train_pred test test_pred model; do owned+=(-v "${vol[$role]}:/v/$role"); done
  docker run --rm --network none "${owned[@]}" --entrypoint /bin/chown "$workflow" \
    "$user" /v/perf /v/train_pred /v/test /v/test_pred /v/model
fi
fill "${vol[train]}" "$train_url"
fill "${vol[hidden]}" "$test_url"
fill "${vol[test]}" "$pred_url"

run() { # image mounts... -- command...
  local image=$1 mounts=()
  shift
  while [ "$1" != -- ]; do mounts+=(-v "$1"); shift; done
  shift
  "$engine" run --rm "${hard[@]}" "${mounts[@]}" "$image" "$@" >/dev/null
}
run "$workflow" "${vol[hidden]}:/hidden_data/test:ro" "${vol[test]}:/submission_data/test" \
  -- -T detarget -i /hidden_data -s /submission_data
run "$submission" "${vol[train]}:/data/train:ro" "${vol[train_pred]}:/data/train/pred" \
  "${vol[test]}:/data/test:ro" "${vol[test_pred]}:/data/test/pred" "${vol[model]}:/data/model" \
  -- -V /data -T train
run "$workflow" "${vol[hidden]}:/hidden_data/test:ro" "${vol[perf]}:/hidden_data/perf" \
  "${vol[train]}:/submission_data/train:ro" "${vol[train_pred]}:/submission_data/train/pred:ro" \
  "${vol[test]}:/submission_data/test:ro" "${vol[test_pred]}:/submission_data/test/pred:ro" \
  -- -T perf -i /hidden_data -s /submission_data

if [ "$engine" = podman ]; then
  podman volume export "${vol[model]}" --output "$out/model.tar"
  podman volume export "${vol[perf]}" --output "$out/perf.tar"
else
  docker run --rm --network none -v "${vol[model]}:/mnt:ro" -v "${vol[perf]}:/perf:ro" \
    --entrypoint /bin/tar "$workflow" -c -C / mnt perf >"$out/out.tar"
fi
"$engine" volume rm --force "${vol[@]}" >/dev/null
