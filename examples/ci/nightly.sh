#!/usr/bin/env bash
# The commands of the nightly workflow (examples/ci/nightly.yml), in one file so that the
# workflow and the test that exercises them (harness/cnpg-ext-harness/tests/ci_recipe.rs) run
# the same thing. Writes into $OUT: matrix/ (the reports), nightly.tar.gz (the bundle),
# bundle.txt (`bundle show`), diff.md (against $PREVIOUS, last night's bundle, when there is
# one) and comment.md (summary + diff, for the step summary or an issue comment).
# Exit: 0 every cell passed and nothing regressed, 1 a cell failed or a scenario regressed,
# anything else: the matrix or the diff could not run.
set -uo pipefail

HARNESS=${HARNESS:-cnpg-ext-harness}
MATRIX=${MATRIX:-examples/ci/nightly-matrix.yaml}
OUT=${OUT:-out}
PREVIOUS=${PREVIOUS:-previous/nightly.tar.gz}
RETRIES=${RETRIES:-1}
MATRIX_JOBS=${MATRIX_JOBS:-1}

mkdir -p "$OUT"
"$HARNESS" matrix "$MATRIX" --jobs "$MATRIX_JOBS" --retries "$RETRIES" --no-progress \
  --report-dir "$OUT/matrix" --bundle "$OUT/nightly.tar.gz"
matrix_exit=$?
if [ "$matrix_exit" -gt 1 ]; then
  echo "the matrix could not run (exit $matrix_exit)" >&2
  exit "$matrix_exit"
fi

"$HARNESS" bundle show "$OUT/nightly.tar.gz" > "$OUT/bundle.txt" || exit $?

diff_exit=0
if [ -f "$PREVIOUS" ]; then
  "$HARNESS" diff "$PREVIOUS" "$OUT/nightly.tar.gz" --output "$OUT/diff.md" > /dev/null
  diff_exit=$?
  if [ "$diff_exit" -gt 1 ]; then
    echo "the diff against $PREVIOUS could not run (exit $diff_exit)" >&2
    exit "$diff_exit"
  fi
else
  printf '## cnpg-ext-harness diff\n\nNo earlier bundle (%s) to compare with.\n' "$PREVIOUS" > "$OUT/diff.md"
fi
cat "$OUT/matrix/summary.md" "$OUT/diff.md" > "$OUT/comment.md"

[ "$matrix_exit" -eq 0 ] && [ "$diff_exit" -eq 0 ]
