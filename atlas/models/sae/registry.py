"""The SAE variants, registered here and nowhere else: adding one is a module and one line below."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from atlas.errors import AtlasError
from atlas.models.sae.batchtopk import BatchTopK
from atlas.models.sae.jumprelu import JumpReLU
from atlas.models.sae.relu import ReLU
from atlas.models.sae.topk import TopK
from atlas.models.sae.variant import SAEVariant

# The `[sae]` config section: one typed section per variant, told apart by `kind`.
SAESettings = Annotated[ReLU | TopK | BatchTopK | JumpReLU, Field(discriminator="kind")]

VARIANTS: dict[str, type[SAEVariant]] = {v.model_fields["kind"].default: v for v in (ReLU, TopK, BatchTopK, JumpReLU)}
DEFAULT_KIND = "relu"
_ADAPTER: TypeAdapter[SAEVariant] = TypeAdapter(SAESettings)


def variant_for(kind: str) -> SAEVariant:
    """The variant `kind` with default settings (what a loaded SAE needs: its activation)."""
    if kind not in VARIANTS:
        raise AtlasError(f"SAE kind {kind!r} is not known (known: {', '.join(VARIANTS)})")
    return VARIANTS[kind](kind=kind)


def sae_settings(**values: Any) -> SAEVariant:
    """A validated `[sae]` section (`kind` defaults to relu), e.g. `sae_settings(kind="topk", k=16)`."""
    try:
        return _ADAPTER.validate_python({"kind": DEFAULT_KIND, **values})
    except ValidationError as e:
        first = e.errors()[0]
        raise AtlasError(f"sae.{'.'.join(str(p) for p in first['loc'][1:])}: {first['msg']}") from None


def saelens_variant(architecture: str) -> SAEVariant | None:
    """The variant that reads SAELens folders of this `architecture`, or None."""
    for v in VARIANTS.values():
        if architecture in v.saelens_architectures:
            return v(kind=v.model_fields["kind"].default)
    return None


def saelens_architectures() -> list[str]:
    return [a for v in VARIANTS.values() for a in v.saelens_architectures]
