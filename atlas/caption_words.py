"""Caption words over-represented among a feature's images: the vision analogue of a logit table.

A feature's images are its top images and its quantile samples (what its page shows). A word's lift is
the share of those images whose caption has the word over its share among all captioned images; a
feature whose top words name its icon's subject is what it looks like, one whose top words are "watermark"
or a photographer's name is a spurious one. Words count once per caption; words seen in fewer than
`min_images` of the feature's images are left out (a lift from one caption is noise).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from atlas.store import table_from_rows

CAPTION_WORDS_SQL = """
WITH words AS (
    SELECT DISTINCT image_id, unnest(regexp_split_to_array(lower(caption), '[^a-z0-9]+')) AS word
    FROM images WHERE caption IS NOT NULL AND caption <> ''),
kept AS (SELECT image_id, word FROM words WHERE length(word) > 1),
captioned AS (SELECT count(DISTINCT image_id) AS n FROM kept),
overall AS (SELECT word, count(*) AS images FROM kept GROUP BY word),
shown AS (
    SELECT feature_id, image_id FROM top_images UNION SELECT feature_id, image_id FROM quantile_samples),
shown_captioned AS (
    SELECT s.feature_id, s.image_id FROM shown s SEMI JOIN (SELECT DISTINCT image_id FROM kept) k USING (image_id)),
per_feature AS (SELECT feature_id, count(*) AS n FROM shown_captioned GROUP BY feature_id),
counted AS (
    SELECT s.feature_id, k.word, count(*) AS images
    FROM shown_captioned s JOIN kept k USING (image_id) GROUP BY s.feature_id, k.word)
SELECT c.feature_id, c.word, c.images, (c.images / p.n) / (o.images / captioned.n) AS lift
FROM counted c JOIN per_feature p USING (feature_id) JOIN overall o USING (word), captioned
WHERE c.images >= ? AND (c.images / p.n) > (o.images / captioned.n)
QUALIFY row_number() OVER (PARTITION BY c.feature_id ORDER BY lift DESC, c.images DESC, c.word) <= ?
ORDER BY c.feature_id, lift DESC, c.images DESC, c.word
"""


def caption_words_table(con: duckdb.DuckDBPyConnection, per_feature: int = 10, min_images: int = 2) -> pa.Table:
    """The `caption_words` table from the catalog views `images`, `top_images` and `quantile_samples`:
    each feature's `per_feature` words of highest lift (above 1), seen in at least `min_images` of its images."""
    got = con.sql(CAPTION_WORDS_SQL, params=[min_images, per_feature]).to_arrow_table()
    assert got is not None  # a SELECT always has a result
    return table_from_rows(
        "caption_words",
        {
            "feature_id": got.column("feature_id").cast(pa.int32()),
            "word": got.column("word"),
            "images": got.column("images").cast(pa.int32()),
            "lift": got.column("lift").cast(pa.float32()),
        },
    )
