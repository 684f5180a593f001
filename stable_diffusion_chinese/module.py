"""The PaddleHub Module ``stable_diffusion_chinese``: wiring only; the work is in ``service/``.

PaddleHub reads ``@moduleinfo`` with ``ast`` (so its arguments are literals) and imports this file as
``stable_diffusion_chinese.module`` from ``$HUB_HOME/modules/stable_diffusion_chinese``, which
``sd-chinese install-hub-module`` makes a link to this installed package (docs/module.md).

The class is an ``nn.Layer`` only to tell PaddleHub it runs dynamic-graph code: PaddleHub runs every method
of any other Module under ``paddle.enable_static()``, and after an exception (any bad argument) never
switches back, leaving the caller's process in static mode (paddlehub 2.4.0 ``RunModule.__getattribute__``,
``compat/paddle_utils.py static_mode_guard``). It holds no parameters and has no ``forward``.
"""
from paddle import nn
from paddlehub.module.module import moduleinfo, runnable, serving

from .service import Limits, TextToImage, describe_styles, handle_request, run_command, scheduler_names


@moduleinfo(
    name="stable_diffusion_chinese",
    version="0.1.0",
    type="image/text_to_image",
    summary="Stable Diffusion on PaddlePaddle with Chinese prompts: styles, samplers, seeds, offline default model",
    author="stable_diffusion_chinese",
    author_email="",
)
class StableDiffusionChinese(nn.Layer):
    def __init__(self, model=None, preload=False, **limits):
        """``model``: folder, checkpoint, downloaded name or "embedded" (default: SD_CHINESE_MODEL, config.json,
        embedded). ``preload``: load the model now rather than on the first call. ``limits``: see ``Limits``."""
        # not super(): @moduleinfo rebuilds this class with RunModule added, and super() would name the original
        nn.Layer.__init__(self)
        unknown = sorted(set(limits) - set(Limits.names()))
        if unknown:
            raise TypeError(f"unknown argument(s) {', '.join(unknown)}; accepted: model, preload, "
                            f"{', '.join(Limits.names())}")
        self._engine = TextToImage(model=model, limits=Limits(**limits))
        if preload:
            self._engine.pipeline()

    def generate(self, text, style=None, negative_text=None, width=None, height=None, steps=None, guidance=None,
                 seed=None, num_images=1, scheduler=None, output_dir=None, model=None, guidance_rescale=0.0,
                 image=None, mask=None, strength=None):
        """PIL images for ``text`` (a string or a list); with ``output_dir``, also PNG files with metadata.
        ``steps`` / ``guidance`` None: the model's recommendation (20 and 7.5 unless its model_index.json
        says otherwise; the embedded model: 20 and 3). ``seed`` 0 is a seed like any other; None draws one
        (recorded in each image's parameters). ``guidance_rescale`` 0-1 (0 = off; 0.7 in Lin et al. 2023)
        pulls the guided prediction's spread back towards the text-conditioned one's, against over-exposure.
        ``image`` (path, PIL image or uint8 array): start from it, repainting ``strength`` of it (default 0.8);
        with ``mask`` as well, repaint only the mask's white part (strength default 1)."""
        return self._engine.generate(text, style, negative_text, width, height, steps, guidance, seed, num_images,
                                     scheduler, output_dir, model, guidance_rescale, image, mask, strength).images

    def styles(self):
        """``{name: {"prompt": fragment, "negative": fragment}}`` for ``style=``."""
        return describe_styles()

    def schedulers(self):
        return list(scheduler_names())

    @runnable
    def run_cmd(self, argv):
        return run_command(self._engine, argv, prog="hub run stable_diffusion_chinese")

    @serving
    def serving_method(self, **request):
        return handle_request(self._engine, request)
