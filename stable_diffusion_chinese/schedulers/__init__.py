"""Samplers with diffusers' scheduler contract (see ``base.py``), schedule maths in ``schedule.py``.

    from stable_diffusion_chinese.schedulers import make_scheduler
    scheduler = make_scheduler("dpm++2m_karras", "path/to/model")   # model's scheduler_config.json
"""
from .base import Scheduler, SchedulerOutput, read_scheduler_config
from .config import SchedulerConfig, UnsupportedConfigError
from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler
from .dpm_solver import DPMSolverMultistepScheduler
from .euler import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from .factory import SCHEDULERS, from_pretrained, make_scheduler, scheduler_name, valid_names
from .heun import HeunDiscreteScheduler
from .lcm import LCMScheduler
from .lms import LMSDiscreteScheduler
from .pndm import PNDMScheduler
from .unipc import UniPCMultistepScheduler

__all__ = [
    "Scheduler", "SchedulerOutput", "SchedulerConfig", "UnsupportedConfigError", "read_scheduler_config",
    "make_scheduler", "scheduler_name", "from_pretrained", "valid_names", "SCHEDULERS",
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler", "LCMScheduler",
]
