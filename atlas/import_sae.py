"""Import SAEs trained elsewhere into the atlas's own SAE format (safetensors + config.json).

Two formats, both read without unpickling arbitrary objects:

- **SAELens** (`SAE.save_model`): a folder with `cfg.json` and `sae_weights.safetensors` holding W_enc [d_in, d_sae],
  b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]. SAELens encodes `act((x' - b_dec * apply_b_dec_to_input) @ W_enc
  + b_enc)` and decodes `a @ W_dec + b_dec`, where x' is the input after `normalize_activations`:
  `none` (x' = x), or `expected_average_only_in` (x' = x * c with a dataset-wide constant c that SAELens keeps
  outside cfg.json, so it must be given: `scaling_factor`). Per-input normalisations (`constant_norm_rescale`,
  `layer_norm`) are refused with the reason. Each variant says which SAELens `architecture` values it reads
  (`standard`, `topk`, `batchtopk`, `jumprelu`) and maps their own tensors (JumpReLU's `threshold`, BatchTopK's
  `topk_threshold`); `rescale_acts_by_decoder_norm` (TopK-style training SAEs) is folded into the weights.
- **A plain PyTorch state dict** of a ReLU SAE (`.safetensors`, or `.pt`/`.pth` read with
  `torch.load(weights_only=True)`): nn.Linear-style `encoder.weight` [f, d], `encoder.bias`, `decoder.weight`
  [d, f], `decoder.bias`, or W_enc/b_enc/W_dec/b_dec names; an optional `pre_bias` (or `b_pre`) is subtracted
  from the input and added to the output (the OpenAI sparse_autoencoder convention).

Every format maps exactly onto `SparseAutoencoder` (biases folded where needed), so featurize, render and
the viewer work on the imported SAE unchanged.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from atlas.errors import AtlasError
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder
from atlas.models.sae.registry import saelens_architectures, saelens_variant

SAELENS_CONFIG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"


def import_sae(path: Path, scaling_factor: float | None = None) -> SparseAutoencoder:
    """Read an SAE from `path`: a SAELens folder, or a state-dict file (.safetensors / .pt / .pth)."""
    path = Path(path)
    if path.is_dir():
        if (path / SAELENS_CONFIG).exists():
            return from_saelens(path, scaling_factor)
        raise AtlasError(
            f"{path}: not a SAELens folder (no {SAELENS_CONFIG}); "
            f"give a folder with {SAELENS_CONFIG} + {SAELENS_WEIGHTS}, or a state-dict file"
        )
    if not path.exists():
        raise AtlasError(f"{path}: no such file or folder")
    return from_state_dict(read_state_dict(path))


def from_saelens(folder: Path, scaling_factor: float | None = None) -> SparseAutoencoder:
    """A SAELens-saved SAE (cfg.json + sae_weights.safetensors) as a `SparseAutoencoder`."""
    from safetensors.torch import load_file

    try:
        cfg = json.loads((folder / SAELENS_CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise AtlasError(f"{folder / SAELENS_CONFIG}: not valid JSON ({e})") from None
    if not (folder / SAELENS_WEIGHTS).exists():
        raise AtlasError(f"{folder}: no {SAELENS_WEIGHTS} next to {SAELENS_CONFIG}")
    arch = cfg.get("architecture", "standard")
    variant = saelens_variant(arch)
    if variant is None:
        supported = ", ".join(saelens_architectures())
        raise AtlasError(f"{folder}: SAELens architecture {arch!r} is not supported (supported: {supported})")
    norm = cfg.get("normalize_activations", "none") or "none"
    input_scale = _saelens_input_scale(folder, norm, scaling_factor)
    if cfg.get("reshape_activations", "none") not in (None, "none"):
        raise AtlasError(f"{folder}: reshape_activations = {cfg['reshape_activations']!r} is not supported")
    rescale = bool(cfg.get("rescale_acts_by_decoder_norm"))
    if rescale and not variant.saelens_rescale_foldable:
        raise AtlasError(f"{folder}: rescale_acts_by_decoder_norm = true is not supported for {arch!r}")
    if cfg.get("finetuning_scaling_factor"):
        raise AtlasError(f"{folder}: finetuning_scaling_factor = true is not supported")
    w = load_file(str(folder / SAELENS_WEIGHTS))
    missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(w)
    if missing:
        raise AtlasError(f"{folder / SAELENS_WEIGHTS}: missing tensors {sorted(missing)}")
    if rescale:  # acts = pre * |W_dec row|, decoded by W_dec / |row|: the same SAE with the norms folded in
        n_f = w["W_dec"].norm(dim=1)
        w["W_enc"], w["b_enc"], w["W_dec"] = w["W_enc"] * n_f, w["b_enc"] * n_f, w["W_dec"] / n_f[:, None]
    fields = {"l1_coefficient": 0.0, **variant.from_saelens(cfg, w, str(folder / SAELENS_WEIGHTS))}
    d_in, d_sae = int(cfg.get("d_in", w["W_enc"].shape[0])), int(cfg.get("d_sae", w["W_enc"].shape[1]))
    imported = {"format": "saelens", "from": str(folder), "architecture": arch, "normalize_activations": norm}
    sae_cfg = SAEConfig(
        d_in=d_in,
        n_features=d_sae,
        kind=variant.kind,
        input_scale=input_scale,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        extra={"imported": imported},
        **fields,
    )
    sae = SparseAutoencoder(sae_cfg)
    _load_weights(sae, w, str(folder / SAELENS_WEIGHTS))
    return sae.eval()


def _saelens_input_scale(folder: Path, norm: str, scaling_factor: float | None) -> float:
    """The constant SAELens multiplies inputs by under `normalize_activations = norm`."""
    if norm == "none":
        if scaling_factor is not None:
            raise AtlasError(f"{folder}: scaling_factor given, but the SAE's normalize_activations is 'none'")
        return 1.0
    if norm == "expected_average_only_in":
        if scaling_factor is None:
            raise AtlasError(
                f"{folder}: normalize_activations = expected_average_only_in needs the dataset's scaling factor, "
                "which SAELens does not store in cfg.json: pass --scaling-factor"
            )
        return float(scaling_factor)
    raise AtlasError(f"{folder}: normalize_activations = {norm!r} rescales each input on its own: not supported")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a state-dict file, read safely (safetensors, or torch.load with weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:  # weights_only refuses code
        raise AtlasError(
            f"{path}: not a plain state dict that loads safely ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    for key in ("state_dict", "model", "sae"):  # common wrappers of one level
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AtlasError(f"{path}: expected a dict of tensors (a state dict)")
    return obj


def from_state_dict(sd: dict[str, torch.Tensor], where: str = "state dict") -> SparseAutoencoder:
    """A ReLU SAE from encoder/decoder weights and biases (nn.Linear names or W_enc/b_enc/W_dec/b_dec)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}

    def pick(*names: str) -> torch.Tensor | None:
        return next((sd[n] for n in names if n in sd), None)

    W_enc = sd["encoder.weight"].T if "encoder.weight" in sd else pick("W_enc")  # nn.Linear stores [out, in]
    W_dec = sd["decoder.weight"].T if "decoder.weight" in sd else pick("W_dec")
    if W_enc is None or W_dec is None:
        raise AtlasError(
            f"{where}: no encoder/decoder weights "
            f"(expected encoder.weight + decoder.weight, or W_enc + W_dec; found {sorted(sd)[:8]})"
        )
    d_in, n = W_enc.shape
    b_enc = pick("encoder.bias", "b_enc", "latent_bias")
    b_enc = torch.zeros(n) if b_enc is None else b_enc
    b_dec = pick("decoder.bias", "b_dec")
    pre = pick("pre_bias", "b_pre")
    apply = False
    if pre is not None and b_dec is None:
        b_dec, apply = pre, True  # subtract pre_bias on the way in, add it on the way out: exactly b_dec
    elif pre is not None and b_dec is not None:
        b_enc = b_enc - pre.to(W_enc.dtype) @ W_enc  # fold the input shift into the encoder bias
        b_dec = b_dec + pre
    b_dec = torch.zeros(d_in) if b_dec is None else b_dec
    sae = SparseAutoencoder(
        SAEConfig(
            d_in=d_in,
            n_features=n,
            kind="relu",
            l1_coefficient=0.0,
            apply_b_dec_to_input=apply,
            extra={"imported": {"format": "state_dict", "from": where}},
        )
    )
    _load_weights(sae, {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, where)
    return sae.eval()


def _load_weights(sae: SparseAutoencoder, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy every tensor the SAE has (its variant's too) from `tensors`, checking names and shapes."""
    d, f = sae.cfg.d_in, sae.cfg.n_features
    want = sae.state_dict()
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise AtlasError(f"{where}: missing tensors {missing} for a {sae.cfg.kind} SAE")
    for name, target in want.items():
        if tuple(tensors[name].shape) != tuple(target.shape):
            raise AtlasError(
                f"{where}: {name} has shape {tuple(tensors[name].shape)}, expected {tuple(target.shape)} "
                f"(d_in={d}, features={f})"
            )
    sae.load_state_dict({name: tensors[name].float() for name in want})


def check_width(sae: SparseAutoencoder, embedding_dim: int, where: str) -> None:
    """One clear error when the SAE does not read embeddings of this atlas's width."""
    if sae.cfg.d_in != embedding_dim:
        raise AtlasError(
            f"{where}: the SAE reads {sae.cfg.d_in}-d inputs but this atlas's embeddings are {embedding_dim}-d "
            "(was it trained on another CLIP?)"
        )
