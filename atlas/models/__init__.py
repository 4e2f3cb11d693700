"""Models behind small interfaces, each loaded by a spec string: CLIP embedder, SAE, renderer."""
