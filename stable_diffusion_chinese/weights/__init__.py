"""Reading checkpoints into numpy state dicts and loading them strictly into our layers.

Canonical parameter names are diffusers'/transformers' names; every other layout maps onto them
through a data table (see ``ldm_names.py``).
"""
from .state_dict import WeightsMismatchError, load_into, export_from

__all__ = ["WeightsMismatchError", "load_into", "export_from"]
