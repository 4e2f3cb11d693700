"""The planted world: power-law frequencies that sum to l0, codes with that mean L0, embeddings = code x dictionary."""

from __future__ import annotations

import numpy as np

from atlas.planted import PlantedWorld


def test_frequencies_follow_the_power_law_and_sum_to_l0():
    w = PlantedWorld(n_features=4096, dim=32, l0=30, exponent=0.8)
    p = w.frequencies()
    assert abs(p.sum() - 30) < 1e-6 and p.max() <= w.max_frequency
    uncapped = p < w.max_frequency
    f = np.flatnonzero(uncapped)
    slope = np.polyfit(np.log(f[10:] + 1), np.log(p[f[10:]]), 1)[0]
    assert abs(slope + 0.8) < 1e-6


def test_codes_have_the_planned_l0_and_embeddings_are_their_sums():
    w = PlantedWorld(n_features=2048, dim=64, l0=12, noise=0.0)
    codes = w.codes(2000)
    assert abs(len(codes) / 2000 - 12) < 0.5
    assert np.all(np.diff(codes.rows) >= 0) and np.all(codes.values > 0)
    d = w.dictionary()
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    x = w.embeddings(codes, d, 10, 20)
    for i, row in enumerate(range(10, 20)):
        sel = codes.rows == row
        np.testing.assert_allclose(x[i], codes.values[sel] @ d[codes.features[sel]], atol=1e-5)


def test_a_planted_folder_is_a_valid_embeddings_source_holding_its_truth(tmp_path):
    import pyarrow.parquet as pq

    from atlas.embedding_source import list_embedding_files
    from atlas.planted import write_planted_folder

    w = PlantedWorld(n_features=512, dim=64, l0=8, noise=0.0)
    summary = write_planted_folder(w, tmp_path, 2500, rows_per_file=1000)
    _, _, files = list_embedding_files(str(tmp_path), 64)  # the source's own validation
    assert [f.n_rows for f in files] == [1000, 1000, 500] and summary["files"] == 3
    d = np.load(tmp_path / "dictionary.npy")
    np.testing.assert_array_equal(d, w.dictionary())
    truth = pq.read_table(tmp_path / "codes").to_pandas()
    assert len(truth) == summary["nonzero_codes"] and truth["row"].between(0, 2499).all()
    x = np.concatenate([np.load(tmp_path / "img_emb" / f"img_emb_{i}.npy") for i in range(3)])
    for row in (0, 999, 1000, 2499):  # noise-free: each embedding is exactly its code times the dictionary
        sel = truth[truth["row"] == row]
        np.testing.assert_allclose(x[row], sel["value"].to_numpy() @ d[sel["feature_id"].to_numpy()], atol=1e-5)
    assert not list(tmp_path.rglob("*.tmp"))
