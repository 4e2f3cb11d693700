"""Feature labels without a language model: each feature's top words from a shipped vocabulary, by cosine
between its decoder direction and the words' CLIP text embeddings.

A word's embedding is the mean of its normalised text embeddings over prompt templates ("a photo of {}."
for a real CLIP; the bare word for the built-in toy CLIPs). The built-in CLIPs only ever saw the toy world's
captions, so for them the vocabulary is cut to the entries made of caption words (`vocabulary_for`): a word
they never read embeds to an arbitrary point that would win labels at random. The
vocabulary's mean embedding is subtracted before comparing (`VocabularyEmbeddings.centred`): CLIP text
embeddings share a large common component ("this is text") that would otherwise dominate every cosine.
Text queries are centred the same way (`atlas.search`), so a label and a search agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from atlas.store import atomic_write_bytes, atomic_write_json, table_from_rows
from atlas.toyworld.world import scenes
from atlas.vector_index import normalised

VOCABULARY = Path(__file__).resolve().parent / "vocabulary" / "words.txt"
REAL_CLIP_TEMPLATES = ("a photo of {}.", "a picture of {}.", "an image of {}.", "{}")
TOY_CLIP_TEMPLATES = ("{}",)
TOP_WORDS = 5  # words stored per feature (rank 1 is features.label)
VOCABULARY_FILE = "vocabulary.npz"  # in <atlas>/index/: the centred word embeddings, for search and relabelling


def read_vocabulary(path: Path = VOCABULARY) -> list[str]:
    """The words and phrases of a vocabulary file (one a line, `#` comments, duplicates dropped)."""
    words: dict[str, None] = {}
    for line in path.read_text().splitlines():
        word = line.strip()
        if word and not word.startswith("#"):
            words.setdefault(word, None)
    return list(words)


def toy_caption_words() -> set[str]:
    """Every word of the toy world's caption language (from generated captions: deterministic)."""
    return {w for scene in scenes(2000, 0) for w in scene.caption().split()}


def vocabulary_for(clip_spec: str, path: Path = VOCABULARY) -> list[str]:
    """The label vocabulary for a CLIP spec: the whole file for a real CLIP; for a built-in toy CLIP, the
    entries made only of toy caption words."""
    words = read_vocabulary(path)
    if not clip_spec.startswith("builtin:"):
        return words
    known = toy_caption_words()
    return [w for w in words if set(w.split()) <= known]


def templates_for(clip_spec: str) -> tuple[str, ...]:
    """Prompt templates for a CLIP spec: the bare word for the built-in toy models, photo prompts otherwise."""
    return TOY_CLIP_TEMPLATES if clip_spec.startswith("builtin:") else REAL_CLIP_TEMPLATES


@dataclass(frozen=True)
class VocabularyEmbeddings:
    words: list[str]
    templates: tuple[str, ...]
    mean: np.ndarray  # [d] the mean of the words' normalised embeddings
    centred: np.ndarray  # [V, d] unit rows: normalise(embedding - mean)

    def centre(self, text_embeddings: np.ndarray) -> np.ndarray:
        """Text embeddings [Q, d] in the labels' frame: normalised, the vocabulary mean removed, normalised."""
        return normalised(normalised(text_embeddings) - self.mean)

    def save(self, path: Path) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, centred=self.centred)
        atomic_write_bytes(path, buf.getvalue())
        atomic_write_json(path.with_suffix(".json"), {"words": self.words, "templates": list(self.templates)})

    @classmethod
    def load(cls, path: Path) -> VocabularyEmbeddings:
        meta = json.loads(path.with_suffix(".json").read_text())
        with np.load(path) as z:
            return cls(meta["words"], tuple(meta["templates"]), z["mean"], z["centred"])


def embed_vocabulary(
    encode_texts, words: list[str], templates: tuple[str, ...], batch_size: int = 256
) -> VocabularyEmbeddings:
    """Embed every word under every template with `encode_texts(list[str]) -> [B, d]`; average per word."""
    total = None
    for template in templates:
        prompts = [template.format(w) for w in words]
        z = np.concatenate(
            [normalised(encode_texts(prompts[s : s + batch_size])) for s in range(0, len(prompts), batch_size)]
        )
        total = z if total is None else total + z
    per_word = normalised(total / len(templates))
    mean = per_word.mean(axis=0)
    return VocabularyEmbeddings(words, templates, mean.astype(np.float32), normalised(per_word - mean))


def top_words(
    directions_fd: np.ndarray, vocab: VocabularyEmbeddings, k: int = TOP_WORDS, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """For each direction [F, d]: the indices [F, k] of its k most aligned words and their cosines [F, k]."""
    k = min(k, len(vocab.words))
    idx = np.zeros((len(directions_fd), k), dtype=np.int64)
    score = np.zeros((len(directions_fd), k), dtype=np.float32)
    for s in range(0, len(directions_fd), chunk):
        cos = normalised(directions_fd[s : s + chunk]) @ vocab.centred.T
        part = np.argpartition(-cos, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(cos, part, axis=1), axis=1)
        idx[s : s + chunk] = np.take_along_axis(part, order, axis=1)
        score[s : s + chunk] = np.take_along_axis(cos, idx[s : s + chunk], axis=1)
    return idx, score


def labels_table(
    feature_ids: np.ndarray, directions_fd: np.ndarray, vocab: VocabularyEmbeddings, k: int = TOP_WORDS
) -> pa.Table:
    """The `labels` table: (feature_id, rank, word, score) for the given features' decoder directions."""
    idx, score = top_words(directions_fd, vocab, k)
    n, k = idx.shape
    words = np.asarray(vocab.words, dtype=object)
    return table_from_rows(
        "labels",
        {
            "feature_id": np.repeat(np.asarray(feature_ids, dtype=np.int32), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
            "word": words[idx.reshape(-1)].tolist(),
            "score": score.reshape(-1),
        },
    )
