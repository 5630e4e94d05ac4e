#!/usr/bin/env bash
# One million sentences of Korean Wikipedia, one per line (unsupervised SimCSE), from the release
# v1.0.0 of the GitHub repository snumin44/SimCSE-KO, into data/korean_wiki_1m.txt.
source "$(dirname "${BASH_SOURCE[0]}")/download.sh"
URL=${WIKI_URL:-https://github.com/snumin44/SimCSE-KO/releases/download/v1.0.0/korean_wiki_1m.txt}

download "$URL" "$DATA_DIR/korean_wiki_1m.txt"
