# Sourced by the download scripts of this folder: `download URL DEST`.
# Fetches into DEST.part and moves it into place only when the transfer succeeded and the file is not
# empty, so a failed download never leaves a file that looks complete. Exits non-zero on any failure.
source "$(dirname "${BASH_SOURCE[0]}")/../train/help.sh"
set -euo pipefail
if [[ $# -gt 0 ]]; then
  echo "error: $(basename "$0") takes no arguments, got: $* (DATA_DIR=FOLDER chooses where the files go; --help)" >&2
  exit 2
fi

# Where the files go: DATA_DIR, else SIMCSE_KO_DATA_DIR (where the package looks), else the repo's data/.
DATA_DIR=${DATA_DIR:-${SIMCSE_KO_DATA_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}}

download() {
  local url=$1 dest=$2
  local dir created
  dir=$(dirname "$dest")
  # The outermost folder this call creates: removed again, if still empty, when the download fails.
  created=$dir
  while [ ! -d "$(dirname "$created")" ]; do created=$(dirname "$created"); done
  [ -d "$created" ] && created=""
  mkdir -p "$dir"
  echo "downloading $url"
  # A dead network fails within the connect timeout; a transfer stalled for a minute is abandoned.
  if ! curl --fail --location --retry 3 --connect-timeout 20 --speed-limit 1 --speed-time 60 \
      --silent --show-error --output "$dest.part" "$url"; then
    fail "download failed: $url"
  fi
  if [ ! -s "$dest.part" ]; then
    fail "empty download: $url"
  fi
  mv "$dest.part" "$dest"
  echo "wrote $dest ($(wc -l < "$dest") lines)"
}

fail() {
  rm -f "$dest.part"
  if [ -n "$created" ]; then find "$created" -depth -type d -empty -delete; fi
  echo "error: $1" >&2
  exit 1
}
