# Shared by oracle/cnpg-plan, oracle/add-version and oracle/check (sourced, not run).

oracle_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

oracle_die() { # code message...
  local code=$1; shift
  echo "cnpg-plan: $*" >&2
  exit "$code"
}

# Versions with a go.mod in oracle/mod, oldest first.
oracle_versions() {
  local f
  for f in "$oracle_dir"/mod/v*.mod; do
    [ -e "$f" ] || continue
    f=${f##*/v}; echo "${f%.mod}"
  done | sort -V
}

# The line of oracle/mod/unsupported naming version $1 (why the oracle cannot build it).
oracle_unsupported_reason() {
  grep -E "^$(printf '%s' "$1" | sed 's/\./\\./g')[[:space:]]" "$oracle_dir/mod/unsupported" 2>/dev/null | cut -f2- || true
}

# The go command: CNPG_EXT_HARNESS_GO when set, else go on PATH, else /usr/local/go/bin/go.
oracle_go() {
  if [ -n "${CNPG_EXT_HARNESS_GO:-}" ]; then [ -x "$CNPG_EXT_HARNESS_GO" ] && echo "$CNPG_EXT_HARNESS_GO"
  elif command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else return 1; fi
}

# Cache root, as the harness chooses it: CNPG_EXT_HARNESS_CACHE, else
# $XDG_CACHE_HOME/cnpg-ext-harness, else ~/.cache/cnpg-ext-harness.
oracle_cache() {
  if [ -n "${CNPG_EXT_HARNESS_CACHE:-}" ]; then echo "$CNPG_EXT_HARNESS_CACHE/oracle"
  elif [ -n "${XDG_CACHE_HOME:-}" ]; then echo "$XDG_CACHE_HOME/cnpg-ext-harness/oracle"
  else echo "${HOME:?HOME is not set; set CNPG_EXT_HARNESS_CACHE}/.cache/cnpg-ext-harness/oracle"; fi
}

# version_ge A B: A >= B (dotted numbers).
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$2" ]; }

# Source directories of version $1 (relative to oracle/src; "." is the common part):
# the API variant (api-1.27 before 1.29, api-1.29 from 1.29) and the instance-manager variant:
# im-run + im-attach-<api> (the instance manager's own code), or im-restated when
# oracle/mod/v$1.variant says "restated" (ORACLE_VARIANT=restated forces it, for oracle/check).
oracle_src_dirs() {
  local api=1.27
  version_ge "$1" 1.29.0 && api=1.29
  echo . "api-$api"
  if [ "${ORACLE_VARIANT:-}" = restated ] ||
     { [ -f "$oracle_dir/mod/v$1.variant" ] && grep -qx restated "$oracle_dir/mod/v$1.variant"; }; then
    echo im-restated
  else
    echo im-run "im-attach-$api"
  fi
}

# Copies version $1's sources into directory $2.
oracle_copy_sources() {
  local d
  for d in $(oracle_src_dirs "$1"); do cp "$oracle_dir/src/$d"/*.go "$2/"; done
}

# Key of a build: the sources, the version's mod/sum/note/variant files and the Go version.
oracle_key() {
  local v=$1 go=$2
  {
    "$go" version
    cd "$oracle_dir" || exit 1
    for f in $(for d in $(oracle_src_dirs "$v"); do ls "src/$d"/*.go; done) \
             mod/v"$v".mod mod/v"$v".sum mod/v"$v".note mod/v"$v".variant; do
      if [ -f "$f" ]; then echo "== $f"; cat "$f"; fi
    done
  } | sha256sum | cut -c1-16
}

# Prints the path of an up-to-date binary for version $1, building it when needed. On failure
# explains why on stderr and returns 3.
oracle_ensure_built() {
  local v=$1 go cache key dir reason
  if [ ! -f "$oracle_dir/mod/v$v.mod" ]; then
    reason=$(oracle_unsupported_reason "$v")
    if [ -n "$reason" ]; then
      echo "cnpg-plan: CloudNativePG $v is not supported by the oracle: $reason" >&2
    else
      echo "cnpg-plan: CloudNativePG $v is not supported by the oracle (no oracle/mod/v$v.mod); supported: $(oracle_versions | tr '\n' ' ')— to add it: oracle/add-version $v" >&2
    fi
    return 3
  fi
  if ! go=$(oracle_go); then
    echo "cnpg-plan: Go (>= 1.26) is required to build the oracle and was not found (CNPG_EXT_HARNESS_GO=${CNPG_EXT_HARNESS_GO:-unset}, not on PATH, not at /usr/local/go/bin/go); install it (https://go.dev/doc/install) and re-run" >&2
    return 3
  fi
  cache=$(oracle_cache) || return 3
  key=$(oracle_key "$v" "$go")
  dir="$cache/$v-$key"
  [ "${ORACLE_VARIANT:-}" = restated ] && dir="$cache/$v-restated-$key"
  if [ -x "$dir/cnpg-plan" ]; then echo "$dir/cnpg-plan"; return 0; fi

  mkdir -p "$cache" || { echo "cnpg-plan: cannot create the cache directory $cache" >&2; return 3; }
  (
    # One build per version at a time; a concurrent caller waits and then finds the binary.
    flock 9
    if [ -x "$dir/cnpg-plan" ]; then exit 0; fi
    work=$(mktemp -d "$cache/.build-$v-XXXXXX")
    trap 'rm -rf "$work"' EXIT
    oracle_copy_sources "$v" "$work"
    cp "$oracle_dir/mod/v$v.mod" "$work/go.mod"
    cp "$oracle_dir/mod/v$v.sum" "$work/go.sum"
    note=""
    [ -f "$oracle_dir/mod/v$v.note" ] && note=$(head -1 "$oracle_dir/mod/v$v.note")
    echo "cnpg-plan: building the oracle for CloudNativePG $v (once; cached in $dir)" >&2
    if ! (cd "$work" && GOFLAGS=-mod=readonly GOTOOLCHAIN=local "$go" build -trimpath \
          -ldflags "-X 'main.substitutionReason=$note'" \
          -o "$work/out/cnpg-plan" . >"$work/build.log" 2>&1); then
      echo "cnpg-plan: CloudNativePG $v: the oracle does not build (go build in $work):" >&2
      sed 's/^/  /' "$work/build.log" >&2
      exit 3
    fi
    rm -rf "$dir.tmp" && mv "$work/out" "$dir.tmp" && mv "$dir.tmp" "$dir"
    # Older builds of this version are stale now.
    for old in "$cache/$v"-*; do
      [ "$old" != "$dir" ] && [ -d "$old" ] || continue
      # The restated variant (used by oracle/check) and the normal build age separately.
      if [[ $dir == *-restated-* ]]; then [[ $old == *-restated-* ]] || continue
      else [[ $old != *-restated-* ]] || continue; fi
      rm -rf "$old"
    done
  ) 9>"$cache/.lock-$v" || return 3
  echo "$dir/cnpg-plan"
}
