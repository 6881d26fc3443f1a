# Scores one prediction file against the targets of one data file:
#   awk -f score.awk TARGETS.csv PREDICTIONS
# TARGETS.csv has a header line with a `label` column; PREDICTIONS has the header
# line `label`, then one predicted label per data row, in the same order. Prints
# "<correct> <rows>". Blank lines are ignored in both files.
BEGIN { FS = "," }

{ sub(/\r$/, "") }

/^[ \t]*$/ { next }

FILENAME == ARGV[1] {
  if (!labelcol) {
    for (j = 1; j <= NF; j++) if ($j == "label") labelcol = j
    if (!labelcol) fail_at("no label column in the header")
    next
  }
  if (NF < labelcol) fail_at("row has no label")
  target[++rows] = $labelcol
  next
}

!header {
  if (trim($0) != "label") fail_at("the first line must be the header \"label\", found \"" substr($0, 1, 40) "\"")
  header = 1
  next
}

{
  if (++predicted <= rows && trim($0) == target[predicted]) correct++
}

END {
  if (failed) exit 1
  if (!labelcol) fail(ARGV[1] ": empty file")
  if (!header) fail(ARGV[2] ": empty prediction file (expected the header \"label\" and one label per row)")
  if (rows == 0) fail(ARGV[1] ": no data rows")
  if (predicted != rows) fail(ARGV[2] ": " predicted " predictions for " rows " data rows")
  print correct + 0, rows
}

function trim(s) {
  gsub(/^[ \t]+|[ \t]+$/, "", s)
  return s
}

function fail_at(msg) {
  fail(FILENAME ":" FNR ": " msg)
}

function fail(msg) {
  printf "score: %s\n", msg > "/dev/stderr"
  failed = 1
  exit 1
}
