"""Every table of the atlas directory: its Arrow schema, its column docs, and the folder it lives in.

A table is a folder of Parquet part files (`<atlas>/<folder>/part-*.parquet`). The embedding width `d`
is a property of the atlas (the CLIP model), so schemas with vectors are built by `schema_for(name, dim)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# Bumped whenever a table's schema or the directory layout changes incompatibly.
FORMAT_VERSION = 1


def embedding_type(dim: int) -> pa.DataType:
    """A fixed-size float32 vector of width `dim` (how embeddings and directions are stored)."""
    return pa.list_(pa.float32(), dim)


def vector_width(schema: pa.Schema) -> int | None:
    """The width of the first vector column of `schema` (the atlas's embedding width), or None."""
    for field in schema:
        if pa.types.is_fixed_size_list(field.type):
            return field.type.list_size
    return None


@dataclass(frozen=True)
class PartLayout:
    """How the rows of each part file are ordered and encoded, for tables that SQL reads at scale.

    Rows are sorted by `sort_by`, so a filter on its first column skips whole row groups by their min/max
    statistics; row groups hold `row_group_rows` rows; only `dictionary` columns are dictionary-encoded
    (a dictionary over random 64-bit ids costs a decode per row and saves nothing)."""

    sort_by: tuple[str, ...]
    row_group_rows: int
    dictionary: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    folder: str
    doc: str
    columns: tuple[tuple[str, str, str], ...]  # (name, arrow type name, description)
    layout: PartLayout | None = None  # how each part file is laid out; None = as written, Parquet defaults

    def schema(self, dim: int | None = None) -> pa.Schema:
        fields = []
        for col, type_name, desc in self.columns:
            fields.append(pa.field(col, _arrow_type(type_name, dim), metadata={"doc": desc}))
        return pa.schema(fields, metadata={"table": self.name, "format_version": str(FORMAT_VERSION)})


def _arrow_type(type_name: str, dim: int | None) -> pa.DataType:
    if type_name == "vector":
        if dim is None:
            raise ValueError("this table stores vectors: pass the embedding width `dim`")
        return embedding_type(dim)
    if type_name == "top_features":
        return pa.list_(pa.struct([("feature_id", pa.int32()), ("cosine", pa.float32())]))
    return {
        "int16": pa.int16(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "binary": pa.binary(),
    }[type_name]


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "images",
            "images",
            "One row per image that was embedded.",
            (
                ("image_id", "int64", "stable 64-bit hash of the source key (the same image keeps its id across runs)"),
                (
                    "source",
                    "string",
                    "the source key: a path relative to the folder, <tar>/<key> (WebDataset), "
                    "<file>#<row or key> (Parquet), <metadata file>#<key> or <npy file>#<row> (embeddings)",
                ),
                (
                    "caption",
                    "string",
                    "caption from the dataset (sidecar .txt, WebDataset .txt/.json, Parquet caption column), or null",
                ),
                ("width", "int32", "width of the decoded image in pixels (0: precomputed, image not readable)"),
                ("height", "int32", "height of the decoded image in pixels (0: precomputed, image not readable)"),
                ("thumbnail", "binary", "small JPEG of the image for the viewer (empty when it has no image)"),
            ),
        ),
        TableSpec(
            "embeddings",
            "embeddings",
            "CLIP image embedding of every image, raw (not L2-normalised), in the decoder's space.",
            (
                ("image_id", "int64", "the image (joins images.image_id)"),
                ("embedding", "vector", "CLIP image embedding, float32[d]"),
            ),
        ),
        TableSpec(
            "errors",
            "errors",
            "Every input a stage skipped, and why.",
            (
                ("stage", "string", "the stage that skipped it: embed, render, ..."),
                ("source", "string", "the input: a file, a feature, a row"),
                ("error", "string", "one line saying what was wrong"),
            ),
        ),
        TableSpec(
            "lists",
            "lists",
            "Named feature lists saved from the viewer, append-only: every save writes a new part holding the "
            "whole list as a new version; a list is the rows of its latest version, and a version whose only row "
            "has no feature deletes it (atlas/feature_lists.py).",
            (
                ("list_name", "string", "the list's name"),
                ("version", "int64", "when this version was saved (ns since the epoch); the largest is current"),
                ("position", "int32", "order in the list, from 0"),
                ("feature_id", "int32", "a feature of the list (null: the list was deleted)"),
                ("note", "string", "the list's description"),
            ),
        ),
        TableSpec(
            "train_log",
            "sae/train_log",
            "SAE training curve, one row every `log_every` steps, and a final row on the held-out split.",
            (
                ("step", "int64", "optimiser step"),
                ("samples", "int64", "training samples seen"),
                (
                    "split",
                    "string",
                    "train (a running window) or holdout (the final evaluation; for an imported SAE, all embeddings)",
                ),
                (
                    "loss",
                    "float64",
                    "mse + l1_coefficient * l1 (relu); mse (topk, whose l1_coefficient is 0; AuxK is not logged)",
                ),
                ("mse", "float64", "mean over inputs of the squared reconstruction error, in input units"),
                ("l1", "float64", "mean over inputs of sum_f activation_f * ||W_dec[f]||"),
                ("l0", "float64", "mean number of non-zero activations per input"),
                ("explained_variance", "float64", "1 - SSE/SST, SST about the per-dimension mean (float64)"),
                ("dead_fraction", "float64", "share of features that never fired over the last dead_window samples"),
            ),
        ),
        TableSpec(
            "labels",
            "labels",
            "Each alive feature's top vocabulary words (atlas/vocabulary/words.txt), by cosine between its decoder "
            "direction and the words' CLIP text embeddings, vocabulary mean removed (written by `atlas index`).",
            (
                ("feature_id", "int32", "the feature"),
                ("rank", "int32", "1 = the best-aligned word (the feature's label)"),
                ("word", "string", "a word or short phrase of the vocabulary"),
                ("score", "float32", "cosine between the decoder direction and the word's centred text embedding"),
            ),
            # per-feature rows in feature order, in small row groups: the feature page's `WHERE feature_id = ?`
            # reads one row group, not the whole table
            PartLayout(sort_by=("feature_id", "rank"), row_group_rows=4096, dictionary=()),
        ),
        TableSpec(
            "features",
            "features",
            "One row per SAE feature, with statistics over the whole dataset.",
            (
                ("feature_id", "int32", "index of the feature in the SAE (0 .. n_features-1)"),
                ("alive", "bool", "fired at least once over the dataset"),
                ("frequency", "float64", "fraction of images where the feature is active"),
                ("mean_activation", "float64", "mean activation over the images where it is active (0 if dead)"),
                ("max_activation", "float64", "largest activation over the dataset (0 if dead)"),
                ("activation_mass", "float64", "sum of the feature's activations over the dataset"),
                ("decoder_norm", "float64", "L2 norm of the feature's decoder direction"),
                (
                    "label",
                    "string",
                    "a short human label: in SQL, the rank-1 word of `labels` when the stored value is null "
                    "(see schemas/views.py)",
                ),
            ),
        ),
        TableSpec(
            "activations",
            "activations",
            "Every non-zero SAE activation (a sparse image x feature matrix).",
            (
                ("image_id", "int64", "the image"),
                ("feature_id", "int32", "the feature"),
                ("value", "float32", "activation (> 0)"),
            ),
            # feature-major parts: `WHERE feature_id = f` reads one row group per part, and a self-join on
            # image_id scans plain int64s (see the SQL section of benchmarks/scale.json)
            PartLayout(sort_by=("feature_id", "image_id"), row_group_rows=122_880, dictionary=("feature_id",)),
        ),
        TableSpec(
            "cooccurrence",
            "cooccurrence",
            "For every feature that fires, the features that fire on the same images: its top partners by count "
            "and its top partners by Jaccard (the union, `index.cooccurrence_top_k` of each), counted exactly over "
            "every image (written by `atlas index`, atlas/cooccurrence.py).",
            (
                ("feature_id", "int32", "the feature"),
                ("other_id", "int32", "a feature that fires on some of the same images"),
                ("together", "int64", "images on which both fire"),
                ("jaccard", "float32", "together / images where either fires"),
                ("pmi", "float32", "log2(together * images / (images of feature_id * images of other_id))"),
            ),
            PartLayout(sort_by=("feature_id", "other_id"), row_group_rows=122_880, dictionary=("feature_id",)),
        ),
        TableSpec(
            "feature_map",
            "feature_map",
            "A 2-D map of the alive features: UMAP of their decoder directions under cosine distance, so that "
            "features writing similar directions sit together (written by `atlas index`, atlas/feature_map.py).",
            (
                ("feature_id", "int32", "the feature"),
                ("x", "float32", "map coordinate"),
                ("y", "float32", "map coordinate"),
            ),
        ),
        TableSpec(
            "top_images",
            "top_images",
            "For every alive feature, its top-k images by activation.",
            (
                ("feature_id", "int32", "the feature"),
                ("rank", "int32", "1 = the image where the feature fires most"),
                ("image_id", "int64", "the image"),
                ("value", "float32", "the activation"),
            ),
            PartLayout(sort_by=("feature_id", "rank"), row_group_rows=4096, dictionary=()),
        ),
        TableSpec(
            "caption_words",
            "caption_words",
            "For every feature, the caption words over-represented among its top images and quantile samples "
            "(lift against all captions): what it responds to, and a way to spot spurious features.",
            (
                ("feature_id", "int32", "the feature"),
                ("word", "string", "a caption word (lower case, counted once per caption)"),
                ("images", "int32", "the feature's images whose caption has the word"),
                ("lift", "float32", "share among the feature's images / share among all captioned images"),
            ),
            PartLayout(sort_by=("feature_id", "word"), row_group_rows=4096, dictionary=()),
        ),
        TableSpec(
            "quantile_samples",
            "quantile_samples",
            "For every alive feature, a uniform sample of the images it fires on (featurize.samples of them, "
            "the same however the images were split), cut into featurize.quantile_bins equal-count bins by "
            "activation: images across its activation range, not only the top.",
            (
                ("feature_id", "int32", "the feature"),
                ("bin", "int32", "activation quantile bin, 1 = weakest"),
                ("image_id", "int64", "the image"),
                ("value", "float32", "the activation"),
            ),
            PartLayout(sort_by=("feature_id", "bin", "image_id"), row_group_rows=4096, dictionary=()),
        ),
        TableSpec(
            "icons",
            "icons",
            "One icon per alive feature, rendered with the template-scaled-to-1/5 method.",
            (
                ("feature_id", "int32", "the feature"),
                ("image", "binary", "PNG bytes"),
                ("feature_scale", "float32", "the activation the target feature was set to"),
                ("seed", "int64", "the diffusion seed of this icon"),
                ("steps", "int32", "diffusion steps"),
                ("fidelity_rank", "int32", "re-embed the icon, SAE-encode it: rank of the target feature (1 = top)"),
                ("template", "string", "the template: gray, an image file, or prompt:<text>"),
                ("template_scale", "float32", "factor applied to every template activation (0.2 = 1/5)"),
                ("negative", "string", "negative embedding: zero (CLIP of an all-zeros image) or template"),
                ("keep_error", "bool", "whether the template's SAE reconstruction error was added back"),
                ("guidance_scale", "float32", "classifier-free guidance scale"),
                ("size", "int32", "requested icon side in pixels"),
            ),
            # small row groups in feature order: the viewer reads one feature's icon from one row group
            # (atlas/part_ranges.py), not the whole part's PNGs
            PartLayout(sort_by=("feature_id",), row_group_rows=8, dictionary=()),
        ),
        TableSpec(
            "directions",
            "directions",
            "Contrastive text directions: mean difference of CLIP text embeddings over prompt pairs.",
            (
                ("name", "string", "positive-negative, e.g. red-blue"),
                ("positive", "string", "the positive word"),
                ("negative", "string", "the negative word"),
                ("n_pairs", "int32", "number of prompt pairs averaged"),
                ("vector", "vector", "mean of (normalised positive - normalised negative) text embeddings"),
                ("top_features", "top_features", "SAE features whose decoder direction aligns best (cosine)"),
            ),
        ),
        TableSpec(
            "evaluation",
            "evaluation",
            "Ground truth (labelled data only, `atlas eval`): how well single features predict each factor value.",
            (
                ("factor", "string", "a generating factor of the data: colour, shape, ..."),
                ("value", "string", "one value of it: red, circle, ..."),
                ("n_images", "int32", "images with this value"),
                ("best_feature_id", "int32", "the feature whose activation best predicts the value"),
                ("auroc", "float64", "that feature's AUROC at predicting the value (0.5 = chance)"),
                ("captured", "bool", "auroc >= 0.95"),
                (
                    "probe_auroc",
                    "float64",
                    "held-out AUROC of a logistic-regression probe on the embeddings: how linearly the embedding "
                    "encodes the value, a ceiling for any single feature",
                ),
            ),
        ),
        TableSpec(
            "diff_matches",
            "diff/matches",
            "How the features of atlas A relate to those of B (`atlas diff`): one row per (A feature, B feature) pair "
            "of a group, one row per feature found on one side only.",
            (
                (
                    "kind",
                    "string",
                    "matched (one A feature = one B feature), split (one A feature = several B features), merged "
                    "(several A features = one B feature), gone (only in A), new (only in B)",
                ),
                (
                    "group_id",
                    "int32",
                    "the match, split or merge the row belongs to (a feature of one side only: its own)",
                ),
                ("feature_a", "int32", "the feature of A (null for new)"),
                ("feature_b", "int32", "the feature of B (null for gone)"),
                (
                    "cosine",
                    "float32",
                    "cosine between the two decoder directions; gone/new: to the nearest alive feature of the other "
                    "SAE",
                ),
                (
                    "correlation",
                    "float32",
                    "Pearson correlation of the two features' activations over the images both atlases hold "
                    "(null without shared images, and for gone/new)",
                ),
                (
                    "weight",
                    "float32",
                    "split/merge: the part's coefficient in the non-negative least-squares fit of the whole's unit "
                    "decoder direction by its parts' unit directions; 1 for a match",
                ),
                ("group_cosine", "float32", "cosine between the whole's direction and that fit (a match: its cosine)"),
                (
                    "group_correlation",
                    "float32",
                    "correlation of the whole's activation with the sum of its parts' activations, each times its "
                    "decoder norm (null without shared images)",
                ),
            ),
        ),
        TableSpec(
            "diff_summary",
            "diff/summary",
            "`atlas diff`: how many features of each side fall into each kind.",
            (
                ("kind", "string", "matched, split, merged, gone, new, or dead (never fired: not compared)"),
                ("groups", "int32", "groups of this kind"),
                ("features_a", "int32", "features of A of this kind"),
                ("features_b", "int32", "features of B of this kind"),
                ("share_a", "float64", "features_a over A's alive features (dead: over all of A's features)"),
                ("share_b", "float64", "features_b over B's alive features (dead: over all of B's features)"),
                ("median_cosine", "float64", "median decoder cosine of the kind's rows (null for dead)"),
            ),
        ),
        TableSpec(
            "diff_cosines",
            "diff/cosines",
            "`atlas diff`: the distribution of each alive feature's best decoder cosine to the other SAE.",
            (
                ("side", "string", "a: A's features against B's; b: B's against A's"),
                ("bin_low", "float32", "the bin's lower edge (cosine)"),
                ("bin_high", "float32", "the bin's upper edge"),
                ("features", "int32", "features whose best cosine falls in the bin"),
            ),
        ),
    )
}


def schema_for(name: str, dim: int | None = None) -> pa.Schema:
    """The Arrow schema of table `name`; `dim` is the embedding width for tables that store vectors."""
    return TABLES[name].schema(dim)
