"""One distribution, two import packages with distinct names:

- ``stable_diffusion_chinese``: the engine and the PaddleHub Module directory (module.py at its root);
- ``sdc_sdk`` (source folder ``sdk/``): the low-code SDK and CLI.

``modules/`` holds PaddleHub-side files (serving config, module card) and is not installed as code,
so no generic top-level name (``modules``, ``sdk``) ever lands in site-packages.
"""
from setuptools import find_packages, setup

setup(
    name="stable-diffusion-chinese",
    version="0.1.0",
    description="Stable Diffusion on PaddlePaddle with Chinese prompts first-class",
    python_requires=">=3.10",
    packages=find_packages(include=["stable_diffusion_chinese", "stable_diffusion_chinese.*"]) + ["sdc_sdk"],
    package_dir={"sdc_sdk": "sdk"},
    package_data={"stable_diffusion_chinese": ["assets/*", "assets/**/*"]},
    install_requires=[
        "paddlepaddle==3.3.1",
        "paddlehub==2.4.0",
        "paddlenlp==2.8.1",
        "numpy",
        "pillow",
        "pyyaml",
        "regex",
        "safetensors",
        "sentencepiece",
        "tqdm",
        # pins that keep `import paddlehub` working (see constraints.txt)
        "huggingface_hub<2",
        "aistudio-sdk<0.3",
        "protobuf==3.20.3",
    ],
    extras_require={
        # the PyPI torch wheel here is the CPU build on local disk; never let pip pick a CUDA one
        "test": ["pytest", "torch==2.13.0", "diffusers==0.42.1", "transformers==5.23.0"],
    },
    entry_points={"console_scripts": ["sd-chinese=sdc_sdk.cli:main"]},
)
