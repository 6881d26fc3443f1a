# Nearest-centroid classifier on CSV files: a header line, numeric feature columns
# and, in labelled files, a `label` column with class names.
#
#   awk -v mode=train   [-v model=OLD.csv] -f centroid.awk DATA.csv... > NEW.csv
#   awk -v mode=predict  -v model=MODEL.csv -f centroid.awk DATA.csv    > PRED
#
# The model is a CSV file `class,count,sum_<feature>...`: per-class row counts and
# feature sums. Training adds to the counts and sums of the old model when one is
# given, so training on new data refines the same model. Prediction writes a header
# line `label`, then the nearest class (squared Euclidean distance to the class
# means) for each data row, in the input's order. Only + - * / are used, because
# busybox-static awk has no math library.

BEGIN {
  FS = ","
  nfeat = 0
  nclass = 0
  if (mode != "train" && mode != "predict") fail("mode must be train or predict")
  if (model != "") load_model(model)
  else if (mode == "predict") fail("no model given")
}

{ sub(/\r$/, "") }

FNR == 1 { read_header(); next }

/^[ \t]*$/ { next }

{
  if (NF != ncols) fail("expected " ncols " fields, found " NF)
  for (j = 1; j <= nfeat; j++) {
    x[j] = $(col[j])
    if (!is_number(x[j])) fail("feature " fname[j] " is not a number: \"" x[j] "\"")
  }
  if (mode == "train") learn_row($(labelcol))
  else print nearest()
}

END {
  if (failed) exit 1
  if (mode == "train") write_model()
}

function fail(msg) {
  if (FILENAME != "") msg = FILENAME ":" FNR ": " msg
  printf "centroid: %s\n", msg > "/dev/stderr"
  failed = 1
  exit 1
}

function is_number(s) {
  return s ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/
}

function add_class(name) {
  if (!(name in classidx)) {
    classidx[name] = ++nclass
    cname[nclass] = name
    count[nclass] = 0
    for (j = 1; j <= nfeat; j++) sum[nclass, j] = 0
  }
  return classidx[name]
}

function load_model(path,   line, n, f, k, j, got) {
  got = 0
  while ((getline line < path) > 0) {
    sub(/\r$/, "", line)
    if (line ~ /^[ \t]*$/) continue
    n = split(line, f, ",")
    if (++got == 1) {
      if (f[1] != "class" || f[2] != "count" || n < 3) fail(path ": not a model file (bad header)")
      nfeat = n - 2
      for (j = 1; j <= nfeat; j++) {
        if (f[j + 2] !~ /^sum_./) fail(path ": bad model column \"" f[j + 2] "\"")
        fname[j] = substr(f[j + 2], 5)
      }
      continue
    }
    if (n != nfeat + 2) fail(path ": model row " got " has " n " fields, expected " nfeat + 2)
    if (f[1] == "" || (f[1] in classidx)) fail(path ": empty or repeated class \"" f[1] "\"")
    if (f[2] !~ /^[0-9]+$/ || f[2] + 0 == 0) fail(path ": bad count for class " f[1])
    k = add_class(f[1])
    count[k] = f[2] + 0
    for (j = 1; j <= nfeat; j++) {
      if (!is_number(f[j + 2])) fail(path ": bad sum for class " f[1])
      sum[k, j] = f[j + 2] + 0
    }
  }
  close(path)
  if (got < 2) fail(path ": model file is missing or has no classes")
  for (k = 1; k <= nclass; k++)
    for (j = 1; j <= nfeat; j++) mean[k, j] = sum[k, j] / count[k]
}

# Maps feature names to this file's columns. The first file names the features
# when no model did; every later file must have the same ones, in any order.
function read_header(   j, seen, name) {
  ncols = NF
  labelcol = 0
  split("", seen)
  for (j = 1; j <= NF; j++) {
    if ($j == "label") labelcol = j
    else if (($j in seen) || $j == "") fail("empty or repeated column name \"" $j "\"")
    else seen[$j] = j
  }
  if (mode == "train" && !labelcol) fail("no label column")
  if (nfeat == 0) {
    for (j = 1; j <= NF; j++) if (j != labelcol) fname[++nfeat] = $j
    if (nfeat == 0) fail("no feature columns")
  }
  if (NF - (labelcol ? 1 : 0) != nfeat) fail("expected " nfeat " feature columns, found " NF - (labelcol ? 1 : 0))
  for (j = 1; j <= nfeat; j++) {
    name = fname[j]
    if (!(name in seen)) fail("missing feature column " name)
    col[j] = seen[name]
  }
  if (mode == "predict") print "label"
}

function learn_row(label,   k, j) {
  if (label == "") fail("empty label")
  k = add_class(label)
  count[k]++
  for (j = 1; j <= nfeat; j++) sum[k, j] += x[j]
}

function nearest(   k, j, d, diff, best, bestd) {
  best = 0
  for (k = 1; k <= nclass; k++) {
    d = 0
    for (j = 1; j <= nfeat; j++) {
      diff = x[j] - mean[k, j]
      d += diff * diff
    }
    if (best == 0 || d < bestd) { best = k; bestd = d }
  }
  return cname[best]
}

# Classes sorted by name, so the same data always gives the same file.
function write_model(   order, i, m, t, k, j, line) {
  if (nclass == 0) fail("no training rows")
  for (i = 1; i <= nclass; i++) order[i] = i
  for (i = 2; i <= nclass; i++)
    for (m = i; m > 1 && cname[order[m - 1]] > cname[order[m]]; m--) {
      t = order[m]; order[m] = order[m - 1]; order[m - 1] = t
    }
  line = "class,count"
  for (j = 1; j <= nfeat; j++) line = line ",sum_" fname[j]
  print line
  for (i = 1; i <= nclass; i++) {
    k = order[i]
    line = cname[k] "," count[k]
    for (j = 1; j <= nfeat; j++) line = line "," sprintf("%.10g", sum[k, j])
    print line
  }
}
