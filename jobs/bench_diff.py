"""`atlas bench diff`: `atlas diff` on two SAEs at the seed's shape (81,920 features of 1280-d) over the same
planted images (200,000 by default), against the bare baseline of the same exact nearest-neighbour searches
(FAISS, both ways) run in the same process, with peak memory and known answers.

Atlas A is the planted world's ideal SAE: the true dictionary, its activations the true codes. Atlas B is
derived from A with a known answer for every feature: most kept (direction perturbed to cosine ~0.97,
activations jittered), 1 % split in two (children at cosine ~0.89 to the parent, each firing on about half of
its images), 1 % merged in pairs (the sum direction, the summed activation), 1 % gone, and 1 % new features;
B's feature ids are shuffled. Both atlases are written through the store (SAE folder, features, images,
activations) in a child process, so the peak memory recorded is the diff's and the baseline's alone.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from atlas.planted import PlantedWorld, SparseCodes

ROLES = ("matched", "split", "merged", "gone")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def derive_b(
    world: PlantedWorld, dec_a: np.ndarray, codes_a: SparseCodes, seed: int = 1
) -> tuple[np.ndarray, SparseCodes, dict]:
    """SAE B's decoder and codes from A's, and the truth: role of each A feature, B partner(s), new B ids."""
    rng = np.random.default_rng(seed)
    f, d = dec_a.shape
    order = rng.permutation(f)
    n_split, n_merge, n_gone = f // 100, 2 * (f // 200), f // 100
    split, merge = order[:n_split], order[n_split : n_split + n_merge].reshape(-1, 2)
    gone, kept = order[n_split + n_merge : n_split + n_merge + n_gone], order[n_split + n_merge + n_gone :]
    n_new = f // 100
    dirs = [
        _unit(dec_a[kept] + 0.25 * rng.standard_normal((len(kept), d), dtype=np.float32) / np.sqrt(d)),
    ]
    u = rng.standard_normal((len(split), d), dtype=np.float32)
    u = _unit(u - (u * dec_a[split]).sum(1, keepdims=True) * dec_a[split])
    dirs += [_unit(dec_a[split] + 0.5 * u), _unit(dec_a[split] - 0.5 * u)]
    dirs += [_unit(dec_a[merge[:, 0]] + dec_a[merge[:, 1]]), _unit(rng.standard_normal((n_new, d), dtype=np.float32))]
    dec_b = np.concatenate(dirs)
    new_id = rng.permutation(len(dec_b))  # B's id of each row of dec_b
    dec_b_shuffled = np.empty_like(dec_b)
    dec_b_shuffled[new_id] = dec_b
    start = np.cumsum([0, len(kept), len(split), len(split), len(merge)])
    to_b = np.full(f, -1, np.int64)
    to_b[kept] = new_id[start[0] + np.arange(len(kept))]
    child = np.stack([new_id[start[1] + np.arange(len(split))], new_id[start[2] + np.arange(len(split))]], 1)
    merged_into = new_id[start[3] + np.arange(len(merge))]
    to_b[merge[:, 0]], to_b[merge[:, 1]] = merged_into, merged_into
    split_of = np.full(f, -1, np.int64)
    split_of[split] = np.arange(len(split))
    codes_b = _codes_b(world, codes_a, to_b, split_of, child, new_id[start[4] :], len(dec_b), rng)
    truth = {
        "matched": {int(a): int(to_b[a]) for a in kept},
        "split": {int(a): sorted(map(int, child[i])) for i, a in enumerate(split)},
        "merged": {int(merged_into[i]): sorted(map(int, pair)) for i, pair in enumerate(merge)},
        "gone": sorted(map(int, gone)),
        "new": sorted(map(int, new_id[start[4] :])),
    }
    return dec_b_shuffled, codes_b, truth


def _codes_b(
    world: PlantedWorld,
    a: SparseCodes,
    to_b: np.ndarray,
    split_of: np.ndarray,
    child: np.ndarray,
    new_ids: np.ndarray,
    n_b: int,
    rng: np.random.Generator,
) -> SparseCodes:
    """B's activations: A's mapped through `to_b` (jittered), split entries to one child at random, merged
    entries summed, gone ones dropped, and the new features' own."""
    target = to_b[a.features]
    s = split_of[a.features]
    is_split = s >= 0
    target[is_split] = child[s[is_split], rng.integers(0, 2, int(is_split.sum()))]
    keep = target >= 0
    values = a.values[keep] * rng.lognormal(0, 0.05, int(keep.sum())).astype(np.float32)
    rows, target = a.rows[keep], target[keep]
    median_p = float(np.median(world.frequencies()))
    counts = rng.binomial(a.n_rows, median_p, len(new_ids))
    rows = np.concatenate([rows, rng.integers(0, a.n_rows, int(counts.sum()))])
    target = np.concatenate([target, np.repeat(new_ids, counts)])
    values = np.concatenate([values, rng.lognormal(0, 0.5, int(counts.sum())).astype(np.float32)])
    key, inverse = np.unique(rows * n_b + target, return_inverse=True)  # merged pairs on one image: summed
    summed = np.bincount(inverse, weights=values).astype(np.float32)
    return SparseCodes(a.n_rows, (key // n_b).astype(np.int64), (key % n_b).astype(np.int32), summed)


def write_planted_atlas(root: Path, decoder_fd: np.ndarray, codes: SparseCodes, part_rows: int = 2_000_000) -> None:
    """An atlas whose SAE decodes with `decoder_fd` and whose activations are `codes` (image_id = row + 1),
    with its images and features tables, recorded as trained and featurized."""
    import torch

    from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder
    from atlas.store import AtlasStore, table_from_rows

    store = AtlasStore(root)
    store.ensure_writable()
    f, d = decoder_fd.shape
    sae = SparseAutoencoder(SAEConfig(d_in=d, n_features=f, kind="relu", l1_coefficient=0.0))
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(decoder_fd))
        sae.W_enc.copy_(torch.from_numpy(decoder_fd.T.copy()))
    sae.save(store.sae_dir, extra={"planted": True})
    ids = np.arange(codes.n_rows, dtype=np.int64) + 1
    store.write_part(
        "images",
        "part-00000",
        table_from_rows(
            "images",
            {
                "image_id": ids,
                "source": [f"planted/{i}" for i in ids],
                "caption": [None] * len(ids),
                "width": np.zeros(len(ids), np.int32),
                "height": np.zeros(len(ids), np.int32),
                "thumbnail": [None] * len(ids),
            },
        ),
    )
    for i, lo in enumerate(range(0, len(codes), part_rows)):
        hi = min(lo + part_rows, len(codes))
        columns = {"image_id": codes.rows[lo:hi] + 1, "feature_id": codes.features[lo:hi], "value": codes.values[lo:hi]}
        store.write_part("activations", f"part-{i:05d}", table_from_rows("activations", columns))
    count = np.bincount(codes.features, minlength=f)
    mass = np.bincount(codes.features, weights=codes.values, minlength=f)
    top = np.zeros(f)
    np.maximum.at(top, codes.features, codes.values)
    features = {
        "feature_id": np.arange(f, dtype=np.int32),
        "alive": count > 0,
        "frequency": count / codes.n_rows,
        "mean_activation": np.where(count > 0, mass / np.maximum(count, 1), 0.0),
        "max_activation": top,
        "activation_mass": mass,
        "decoder_norm": np.linalg.norm(decoder_fd, axis=1).astype(np.float64),
        "label": [None] * f,
    }
    store.write_part("features", "part-00000", table_from_rows("features", features))

    def commit(m: dict[str, Any]) -> None:
        for stage in ("train", "featurize"):
            m["stages"][stage] = {"status": "done", "run_id": uuid.uuid4().hex, "summary": {"planted": True}}
        store.record_tables(m, ("images", "activations", "features"))

    store.update_manifest(commit)


def _make_pair(work: Path, world: PlantedWorld, n_images: int) -> None:
    dec_a = world.dictionary()
    codes_a = world.codes(n_images)
    dec_b, codes_b, truth = derive_b(world, dec_a, codes_a)
    write_planted_atlas(work / "a", dec_a, codes_a)
    write_planted_atlas(work / "b", dec_b, codes_b)
    (work / "truth.json").write_text(json.dumps(truth))


def ensure_pair(work: Path, world: PlantedWorld, n_images: int, say) -> float:
    """Write the planted pair into `work` (in a child process) unless it is there for these settings; seconds."""
    stamp = work / "planted.json"
    want = {"world": world.__dict__, "n_images": n_images}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return 0.0
    say(f"bench diff: writing the planted pair ({n_images:,} images x {world.n_features:,} features) to {work}")
    t0 = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=_make_pair, args=(work, world, n_images))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"writing the planted pair failed (exit code {child.exitcode})")
    stamp.write_text(json.dumps(want))
    return time.perf_counter() - t0


def score_against_truth(matches, truth: dict) -> dict[str, float]:
    """Share of each planted role that `atlas diff` found exactly (a split: the same whole and both parts)."""
    rows = matches.to_pylist()
    found_match = {(r["feature_a"], r["feature_b"]) for r in rows if r["kind"] == "matched"}
    groups: dict[tuple[str, int], set[int]] = {}
    for r in rows:
        if r["kind"] == "split":
            groups.setdefault(("split", r["feature_a"]), set()).add(r["feature_b"])
        elif r["kind"] == "merged":
            groups.setdefault(("merged", r["feature_b"]), set()).add(r["feature_a"])
    gone = {r["feature_a"] for r in rows if r["kind"] == "gone"}
    new = {r["feature_b"] for r in rows if r["kind"] == "new"}
    truth_pairs = {(int(a), b) for a, b in truth["matched"].items()}
    return {
        "matched_recall": len(found_match & truth_pairs) / max(len(truth_pairs), 1),
        "matched_precision": len(found_match & truth_pairs) / max(len(found_match), 1),
        "split_recall": float(np.mean([groups.get(("split", int(a))) == set(p) for a, p in truth["split"].items()])),
        "merged_recall": float(np.mean([groups.get(("merged", int(b))) == set(p) for b, p in truth["merged"].items()])),
        "gone_recall": len(gone & set(truth["gone"])) / max(len(truth["gone"]), 1),
        "new_recall": len(new & set(truth["new"])) / max(len(truth["new"]), 1),
    }


def run_diff_bench(work: Path, world: PlantedWorld, n_images: int, say=print) -> dict[str, Any]:
    """Time `atlas diff` (the shipped functions) on the planted pair, then the bare FAISS searches."""
    import faiss

    from atlas.benchmark import peak_rss_mb
    from atlas.diff.compare import DiffSettings, diff_sides
    from atlas.diff.report import write_diff
    from atlas.diff.sides import open_atlas_side
    from atlas.store import AtlasStore

    write_s = ensure_pair(work, world, n_images, say)
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    a, b = open_atlas_side(work / "a"), open_atlas_side(work / "b")
    result = diff_sides(a, b, DiffSettings(), say=say)
    write_diff(AtlasStore(work / "diff"), result)
    diff_s = time.perf_counter() - t0
    rss_diff = peak_rss_mb()
    unit_a, unit_b = a.unit_fd, b.unit_fd
    t0 = time.perf_counter()
    faiss.knn(unit_a, unit_b, 8, metric=faiss.METRIC_INNER_PRODUCT)
    faiss.knn(unit_b, unit_a, 8, metric=faiss.METRIC_INNER_PRODUCT)
    bare_s = time.perf_counter() - t0
    truth = json.loads((work / "truth.json").read_text())
    rows = {r["kind"]: r for r in result.summary.to_pylist()}
    return {
        "n_images": n_images,
        "n_features": world.n_features,
        "dim": world.dim,
        "l0": world.l0,
        "activations": {
            "a": AtlasStore(work / "a").count_rows("activations"),
            "b": AtlasStore(work / "b").count_rows("activations"),
        },
        "planted_pair_written_s": round(write_s, 1),
        "diff_s": round(diff_s, 1),
        "diff_phases_s": result.info["seconds"],
        "bare_faiss_knn_both_ways_s": round(bare_s, 1),
        "ratio_bare_over_diff": round(bare_s / diff_s, 3),
        "peak_rss_mb_before_diff": round(rss_before),
        "peak_rss_mb": round(rss_diff),
        "summary": {k: {"features_a": v["features_a"], "features_b": v["features_b"]} for k, v in rows.items()},
        "known_answers": score_against_truth(result.matches, truth),
        "within_10_minutes": diff_s < 600,
    }


def bench_diff(
    n_images: Annotated[int, typer.Option(help="planted images")] = 200_000,
    n_features: Annotated[int, typer.Option(help="features of each SAE")] = 81_920,
    dim: Annotated[int, typer.Option(help="embedding width")] = 1280,
    l0: Annotated[float, typer.Option(help="mean active features per image")] = 60.0,
    work: Annotated[Path, typer.Option(help="folder for the two planted atlases (kept for reruns)")] = Path(
        "/tmp/atlas-bench-diff"
    ),
    out: Annotated[Path, typer.Option("--out", help="folder for the result JSON")] = Path("benchmarks"),
) -> None:
    """`atlas diff` at the seed's shape on a planted pair with known answers, against bare FAISS searches."""
    from atlas.benchmark import write_result

    world = PlantedWorld(n_features=n_features, dim=dim, l0=l0)
    result = run_diff_bench(work, world, n_images, say=typer.echo)
    path = write_result(out, "diff", result)
    typer.echo(json.dumps({k: result[k] for k in ("diff_s", "bare_faiss_knn_both_ways_s", "peak_rss_mb")}))
    typer.echo(f"known answers: {json.dumps(result['known_answers'])}")
    typer.echo(f"wrote {path}")
