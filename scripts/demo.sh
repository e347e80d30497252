#!/usr/bin/env bash
# The main job on the bundled real data: convert three real h5ad files (human PBMC and mouse
# brain, with per-sample metadata from tests/data/demo.csv) and a real Visium section, then
# inspect, validate, query and sample them.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
say "building cellarrow"
cargo build --quiet --bin cellarrow
BIN="$CARGO_TARGET_DIR/debug/cellarrow"
OUT="${1:-$(mktemp -d)/demo}"
mkdir -p "$OUT"
run() { printf '\n\033[1m$ cellarrow %s\033[0m\n' "$*" >&2; "$BIN" "$@"; }

run convert tests/data/demo.csv -o "$OUT/cohort.corpus" --overwrite
run inspect "$OUT/cohort.corpus"
run validate "$OUT/cohort.corpus" --against tests/data/scanpy_10x_v3_chr21_counts.h5ad tests/data/debian_sctransform_pbmc_counts.h5ad tests/data/scanpy_10x_10k_subset_mouse_counts.h5ad
run query "$OUT/cohort.corpus" "SELECT s.species, s.tissue, count(*) AS cells, round(avg(o.total), 1) AS mean_counts FROM obs o JOIN samples s ON o.sample_id = s.sample_id GROUP BY s.species, s.tissue ORDER BY cells DESC"
run query "$OUT/cohort.corpus" "SELECT count(*) AS lyz_positive FROM obs WHERE sample_id = 'pbmc_3k' AND expr(cell, 'LYZ') > 0"
run sample "$OUT/cohort.corpus" --sampler random --batch-size 256 --seed 7 --where "sample_id = 'mouse_brain_10k' AND nnz > 100" --summary

run convert tests/data/squidpy_visium_mouse_brain_49spots.h5ad -o "$OUT/visium.corpus" --overwrite
run query "$OUT/visium.corpus" "SELECT * FROM blocks(300) ORDER BY n_cells DESC LIMIT 5"
run sample "$OUT/visium.corpus" --sampler blocks --block-size 300 --seed 1 --blocks-sql "SELECT sample_id, block_id FROM blocks(300) WHERE n_cells BETWEEN 3 AND 10" --summary
printf '\ncorpora written under %s\n' "$OUT"
