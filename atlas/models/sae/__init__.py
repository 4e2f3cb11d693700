"""Sparse autoencoders of CLIP embeddings.

- `autoencoder.py`: the model every stage uses (`SparseAutoencoder`, `SAEConfig`, `load_sae`), the only
  module here that imports torch at import time.
- `variant.py`: what an SAE architecture is (`SAEVariant`): its `[sae]` config fields, activation,
  initialisation, extra loss terms and SAELens mapping.
- one module per architecture (`relu.py`, `topk.py`, `batchtopk.py`, `jumprelu.py`), registered in one place:
  `registry.py`. Adding an architecture is one new module and one line there.

Variant modules and the registry stay torch-free at import (they work on tensors through tensor methods), so
the build config can validate `[sae]` without loading torch.
"""
