# Sourced by the download scripts of this folder: `download URL DEST`.
# Fetches into DEST.part and moves it into place only when the transfer succeeded and the file is not
# empty, so a failed download never leaves a file that looks complete. Exits non-zero on any failure.
set -euo pipefail

# Where the files go: the repo's data/ folder unless DATA_DIR is set.
DATA_DIR=${DATA_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

download() {
  local url=$1 dest=$2
  mkdir -p "$(dirname "$dest")"
  echo "downloading $url"
  if ! curl --fail --location --retry 3 --silent --show-error --output "$dest.part" "$url"; then
    rm -f "$dest.part"
    echo "error: download failed: $url" >&2
    exit 1
  fi
  if [ ! -s "$dest.part" ]; then
    rm -f "$dest.part"
    echo "error: empty download: $url" >&2
    exit 1
  fi
  mv "$dest.part" "$dest"
  echo "wrote $dest ($(wc -l < "$dest") lines)"
}
