"""Low-code SDK for stable_diffusion_chinese, installed under the import name ``sdc_sdk``."""
