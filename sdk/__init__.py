"""Low-code SDK for stable_diffusion_chinese, installed under the import name ``sdc_sdk``.

    import sdc_sdk
    images = sdc_sdk.generate("江上烟雨，一叶小舟", style="水墨", seed=0, output_dir="out")   # on this machine
    images = sdc_sdk.Client("http://127.0.0.1:8866").generate("江上烟雨", style="水墨")      # on a server

No PaddleHub knowledge needed; ``sdc_sdk.styles()`` and ``sdc_sdk.schedulers()`` list the choices.
The command line is ``sd-chinese`` (or ``python -m sdc_sdk``). Importing this package is cheap: Paddle loads
on the first local generation.
"""
from .client import Client, ServingError
from .local import convert, download, generate, install_hub_module, schedulers, styles

__all__ = ["generate", "Client", "ServingError", "styles", "schedulers", "convert", "download", "install_hub_module"]
