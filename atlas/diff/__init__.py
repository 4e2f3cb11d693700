"""Comparing two SAE dictionaries (`atlas diff`): which features two SAEs share, which split, merged, appeared
or died. One module per step: `sides` (what is compared), `decoder_match` (FAISS nearest neighbours, mutual
matches, candidates), `coactivation` (DuckDB correlations over shared images), `groups` (split and merge
fits), `compare` (the classification), `report` (the tables written to an atlas folder)."""
