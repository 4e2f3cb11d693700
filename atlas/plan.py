"""`atlas plan`: what a whole atlas will cost (time per stage, its bound, the bottleneck, disk, memory),
computed from the benchmark JSON measured on the user's own machine and, where no GPU figure was measured,
from the H100 figures shipped below. Every figure carries its source.

Model of the stages (each line of the plan says which applies):
- embed: on each GPU the CLIP image tower, fed by JPEG decoding on that GPU's CPU cores; the slower bounds it;
- train: one GPU (data-parallel training is not modelled), the pipeline's measured ratio to a bare loop
  applied to the bare H100 rate;
- featurize: the SAE forward only, taken as 3x the forward + backward + Adam rate (an assumption), times the
  measured featurize ratio;
- render: icons in batches of 32 on each GPU;
- index: labels, the FAISS feature index and the catalog, on the CPU, as measured at 81,920 features, scaled
  linearly in features; plus the co-occurrence count (a sparse A^T A, N x L0^2 multiply-adds), as measured on
  the SQL atlas, scaled linearly in images.
GPUs share no state in embed, featurize and render (independent Ray actors): their time divides by the GPUs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.errors import AtlasError

# Measured on one H100 (random weights of the real shapes, bf16/fp16, eager PyTorch, 2026-11-23; NOTES.md).
H100_SOURCE = "shipped H100 figure (2026-11-23, random weights of the real shape)"
H100_CLIP_IMAGES_PER_S = {"ViT-B-32": 31_000.0, "ViT-L-14": 2_590.0, "ViT-H-14": 1_350.0, "ViT-bigG-14": 521.0}
CLIP_WIDTH = {"ViT-B-32": 512, "ViT-L-14": 768, "ViT-H-14": 1024, "ViT-bigG-14": 1280}
H100_SAE_TRAIN_SAMPLES_PER_S = 153_000.0  # 1280 -> 81,920, batch 4096, bf16 autocast, forward+backward+Adam
H100_ICONS_PER_S = {512: 10.7, 256: 34.0}  # Kandinsky-2.2-shaped decoder, 12 steps, guidance 4, batch 32
DECODE_IMAGES_PER_S_PER_CORE = 97.0  # JPEG 640x512 -> 224 with Image.draft, one core of the GPU box
FORWARD_SPEEDUP = 3.0  # forward only against forward + backward + Adam (assumption)
ICON_BYTES = {512: 400_000, 256: 110_000}  # a PNG icon (assumption: noisy renders compress poorly)


@dataclass(frozen=True)
class StagePlan:
    stage: str
    seconds: float
    bound: str
    source: str


@dataclass(frozen=True)
class AtlasPlan:
    stages: tuple[StagePlan, ...]
    disk_bytes: float
    disk_source: str
    train_memory_gb: float

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def bottleneck(self) -> StagePlan:
        return max(self.stages, key=lambda s: s.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [s.__dict__ for s in self.stages],
            "total_seconds": self.total_seconds,
            "bottleneck": self.bottleneck.stage,
            "disk_bytes": self.disk_bytes,
            "disk_source": self.disk_source,
            "train_memory_gb": self.train_memory_gb,
        }


def clip_arch(spec: str) -> str:
    """The open_clip architecture of a `models.clip` spec (`open_clip:ViT-bigG-14/laion2b_s39b_b160k`)."""
    return spec.split(":", 1)[-1].split("/", 1)[0]


def read_benchmarks(folder: Path) -> dict[str, dict[str, Any]]:
    """The benchmark JSON files of `folder` by name ({} where absent); a garbled one is one line."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise AtlasError(f"{path}: not readable benchmark JSON ({type(e).__name__})") from None
    return out


def _measured(bench: dict[str, dict[str, Any]], name: str, section: str, key: str) -> tuple[float, str] | None:
    """A figure of benchmarks/<name>.json (in `section`), with its source line, or None."""
    data = bench.get(name, {})
    value = data.get(section, {}).get(key) if section else data.get(key)
    if not isinstance(value, int | float):
        return None
    return float(value), f"benchmarks/{name}.json {section + '.' if section else ''}{key} ({data.get('device', '?')})"


def plan_atlas(
    images: int,
    gpus: int,
    clip: str,
    expansion_factor: int,
    epochs: int,
    icons: int,
    icon_size: int,
    cpus_per_gpu: int,
    bench: dict[str, dict[str, Any]],
) -> AtlasPlan:
    """The plan of an atlas of `images` images on `gpus` GPUs (see the module docstring for the model)."""
    for name, value in (("--images", images), ("--gpus", gpus), ("--cpus-per-gpu", cpus_per_gpu)):
        if value <= 0:
            raise AtlasError(f"{name} = {value}: must be positive")
    arch = clip_arch(clip)
    if arch not in H100_CLIP_IMAGES_PER_S:
        known = ", ".join(H100_CLIP_IMAGES_PER_S)
        raise AtlasError(f"models.clip = {clip!r}: no throughput figure for {arch!r} (known: {known})")
    if icon_size not in H100_ICONS_PER_S:
        raise AtlasError(f"--icon-size = {icon_size}: H100 figures exist for {sorted(H100_ICONS_PER_S)} px only")
    d = CLIP_WIDTH[arch]
    n_features = d * expansion_factor
    shape_scale = (d * n_features) / (1280 * 81_920)  # SAE cost relative to the measured 1280 x 81,920
    stages = [_embed(images, gpus, arch, cpus_per_gpu)]
    train_ratio = _measured(bench, "scale", "train", "ratio") or (1.0, "none measured, taken as 1")
    train_rate = H100_SAE_TRAIN_SAMPLES_PER_S * min(1.0, train_ratio[0]) / shape_scale
    stages.append(
        StagePlan(
            "train",
            epochs * images / train_rate,
            f"1 GPU, {epochs} epochs at {train_rate:,.0f} samples/s",
            f"{H100_SOURCE} x train ratio {train_ratio[0]:.2f} from {train_ratio[1]}",
        )
    )
    feat_ratio = _measured(bench, "scale", "featurize", "ratio") or (1.0, "none measured, taken as 1")
    feat_rate = H100_SAE_TRAIN_SAMPLES_PER_S * FORWARD_SPEEDUP * min(1.0, feat_ratio[0]) / shape_scale
    stages.append(
        StagePlan(
            "featurize",
            images / (feat_rate * gpus),
            f"{gpus} GPUs x {feat_rate:,.0f} rows/s",
            f"{H100_SOURCE}, forward taken as {FORWARD_SPEEDUP:g}x train (assumption) x featurize ratio "
            f"{feat_ratio[0]:.2f} from {feat_ratio[1]}",
        )
    )
    rate = H100_ICONS_PER_S[icon_size]
    stages.append(
        StagePlan("render", icons / (rate * gpus), f"{gpus} GPUs x {rate} icons/s at {icon_size} px", H100_SOURCE)
    )
    stages.append(_index(bench, n_features, images))
    disk, disk_source = _disk(bench, images, n_features, icons, icon_size)
    params = 2 * d * n_features + n_features + d
    return AtlasPlan(tuple(stages), disk, disk_source, params * 4 * 4 / 1e9)


def _embed(images: int, gpus: int, arch: str, cpus_per_gpu: int) -> StagePlan:
    gpu_s = images / (H100_CLIP_IMAGES_PER_S[arch] * gpus)
    decode_s = images / (DECODE_IMAGES_PER_S_PER_CORE * cpus_per_gpu * gpus)
    bound = "GPU (CLIP tower)" if gpu_s >= decode_s else f"CPU decode ({cpus_per_gpu} cores per GPU)"
    return StagePlan(
        "embed",
        max(gpu_s, decode_s),
        f"{bound}: GPU {gpu_s:,.0f} s, decode {decode_s:,.0f} s",
        f"{H100_SOURCE}: {arch} {H100_CLIP_IMAGES_PER_S[arch]:,.0f} img/s per GPU, "
        f"decode {DECODE_IMAGES_PER_S_PER_CORE:g} img/s per core",
    )


def _index(bench: dict[str, dict[str, Any]], n_features: int, images: int) -> StagePlan:
    parts = [_measured(bench, "scale", "index", k) for k in ("labels_seconds", "catalog_seconds")]
    parts.append(_measured(bench, "scale", "index", "feature_index_build_seconds"))
    if any(p is None for p in parts):
        return StagePlan("index", 0.0, "CPU", "not measured (run `atlas bench scale --sections index`)")
    features = bench["scale"]["index"].get("features", 81_920)
    per_features_s = sum(p[0] for p in parts if p) * n_features / features
    device = bench["scale"].get("device", "?")
    sql = bench["scale"].get("sql", {})
    cooc_s = (sql.get("cooccurrence") or {}).get("seconds")
    if not isinstance(cooc_s, int | float) or not sql.get("images"):
        return StagePlan(
            "index",
            per_features_s,
            "CPU, linear in features; co-occurrence not measured (`atlas bench scale --sections sql`)",
            f"benchmarks/scale.json index (labels + FAISS + catalog, {device})",
        )
    cooc_s = cooc_s * images / sql["images"]
    return StagePlan(
        "index",
        per_features_s + cooc_s,
        f"CPU: labels, FAISS, catalog {per_features_s:,.0f} s (linear in features), co-occurrence {cooc_s:,.0f} s "
        "(linear in images)",
        f"benchmarks/scale.json index (labels + FAISS + catalog) and sql.cooccurrence ({sql['images']:,} images, "
        f"{device})",
    )


def _disk(bench: dict[str, dict[str, Any]], images: int, n_features: int, icons: int, icon_size: int):
    per_image = _measured(bench, "scale", "disk", "bytes_per_image")
    per_feature = _measured(bench, "scale", "disk", "bytes_per_feature")
    icon_bytes = icons * ICON_BYTES[icon_size]
    if per_image is None or per_feature is None:
        return float("nan"), "not measured (run `atlas bench scale --sections featurize,index,disk`)"
    total = images * per_image[0] + n_features * per_feature[0] + icon_bytes
    return total, (
        f"{per_image[0]:,.0f} B per image and {per_feature[0]:,.0f} B per feature from benchmarks/scale.json "
        f"(embeddings float32 + activations; features, labels, SAE, index), icons {ICON_BYTES[icon_size]:,} B each "
        "(assumption); images rows and thumbnails not counted"
    )
