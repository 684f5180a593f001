"""Stable Diffusion on PaddlePaddle with Chinese prompts first-class.

This folder is both the import package and the PaddleHub Module directory (``module.py`` at its root).
Importing it is cheap: sub-packages are imported where they are used.
"""
__version__ = "0.1.0"
