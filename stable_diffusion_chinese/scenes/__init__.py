"""The embedded model's scene world: a renderer, a caption writer and a judge (issue 4).

    scene = sample_scene(np.random.default_rng(0))
    pixels = render(scene, seed=0)                 # uint8 [128, 128, 3]
    text = caption(scene, np.random.default_rng(1))
    verdict = judge(pixels, scene)                 # per-attribute True / False / None
"""
from .captions import caption
from .judge import judge
from .render import render
from .sampling import held_out, sample_scene
from .world import Scene, SceneObject

__all__ = ["Scene", "SceneObject", "render", "caption", "judge", "sample_scene", "held_out"]
