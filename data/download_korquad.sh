#!/usr/bin/env bash
# KorQuAD 1.0 (Lim et al., 2019; CC BY-ND 2.0 KR, LG CNS) train and dev from its public site, into data/korquad/.
# Then: python data/build_korquad.py   # -> the korquad_dev retrieval set and question -> paragraph training pairs
source "$(dirname "${BASH_SOURCE[0]}")/download.sh"
BASE_URL=${KORQUAD_URL:-https://korquad.github.io/dataset}

for split in train dev; do
  download "$BASE_URL/KorQuAD_v1.0_$split.json" "$DATA_DIR/korquad/KorQuAD_v1.0_$split.json"
done
