#!/bin/sh
# Seeds the frame_parser corpus from the captured protocol examples in ingest/test_data/frames.
# The corpus directory is gitignored: run this before the first `cargo fuzz run`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus/frame_parser"
mkdir -p "$corpus"
cp "$here"/../ingest/test_data/frames/*.json "$corpus"/
echo "seeded $(ls "$corpus" | wc -l) files into $corpus"
