"""The toy world: procedurally drawn images with known factors, and the small CLIP and decoder the project
trains on them, so that every stage of the atlas means something on a CPU and can be checked against
ground truth."""

from atlas.toyworld.world import (
    FACTOR_VALUES,
    FACTORS,
    Scene,
    builtin_images_dir,
    draw_scene,
    sample_scene,
    write_world,
)

__all__ = ["FACTORS", "FACTOR_VALUES", "Scene", "builtin_images_dir", "draw_scene", "sample_scene", "write_world"]
