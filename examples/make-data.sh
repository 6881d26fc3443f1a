#!/bin/sh
# Generates the example data set into examples/data (or the folder given as $1):
# three classes of 4-feature points drawn from Gaussian clusters that overlap a
# little, so a good classifier scores high but below 1.
#
# The random numbers come from a fixed-seed MINSTD generator written in awk, not
# from awk's rand(), whose sequence differs between awk implementations: any awk
# gives the same files.
set -eu

out="${1:-$(dirname "$0")/data}"
mkdir -p "$out"

# gen SEED ROWS WITH_LABEL
gen() {
  awk -v seed="$1" -v rows="$2" -v with_label="$3" '
    function uniform() {
      # MINSTD: products stay below 2^53, so doubles hold them exactly.
      state = (state * 48271) % 2147483647
      return state / 2147483647
    }
    # Sum of 12 uniforms minus 6: close to a standard normal, and needs no
    # log or sqrt, which busybox-static awk lacks.
    function gauss(   s, n) {
      s = 0
      for (n = 0; n < 12; n++) s += uniform()
      return s - 6
    }
    BEGIN {
      state = seed
      ncls = split("alpha beta gamma", cls, " ")
      # Cluster centres, one line of 4 features per class.
      split("0 0 0 0", c1, " "); split("3 3 0 1", c2, " "); split("0 3 3 2", c3, " ")
      for (j = 1; j <= 4; j++) { mu[1, j] = c1[j]; mu[2, j] = c2[j]; mu[3, j] = c3[j] }
      printf "f1,f2,f3,f4%s\n", (with_label ? ",label" : "")
      for (i = 0; i < rows; i++) {
        k = 1 + int(uniform() * ncls)
        line = ""
        for (j = 1; j <= 4; j++) {
          line = line (j > 1 ? "," : "") sprintf("%.3f", mu[k, j] + gauss())
        }
        if (with_label) line = line "," cls[k]
        print line
      }
    }'
}

gen 11 300 1 >"$out/train-1.csv"
gen 22 300 1 >"$out/train-2.csv"
gen 33 200 1 >"$out/test.csv"
gen 44 50 0 >"$out/predict.csv"
