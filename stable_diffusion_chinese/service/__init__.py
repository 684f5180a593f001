"""What the PaddleHub Module and the SDK call: checked arguments, styles, model choice, generation, output.

    from stable_diffusion_chinese.service import TextToImage
    result = TextToImage().generate("江上烟雨，小船", style="水墨", seed=0, output_dir="out")
    result.images, result.params, result.paths

Importing this package is cheap; Paddle is imported when a model is loaded.
"""
from .arguments import Limits, check_request, scheduler_names
from .command_line import run_command
from .engine import Generation, TextToImage
from .models import EmbeddedWeightsMissingError, ModelNotFoundError, choose_model, embedded_model_folder
from .serving import handle_request
from .settings import ENV_HOME, ENV_MODEL, ConfigError, Settings
from .styles import UnknownStyleError, describe_styles, style_names

__all__ = ["TextToImage", "Generation", "Limits", "check_request", "scheduler_names", "run_command",
           "handle_request", "describe_styles", "style_names", "UnknownStyleError", "choose_model",
           "embedded_model_folder", "ModelNotFoundError", "EmbeddedWeightsMissingError", "Settings", "ConfigError",
           "ENV_HOME", "ENV_MODEL"]
