"""GSNet on Detectron2: open-vocabulary remote-sensing semantic segmentation."""

import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
version = {}
with open(os.path.join(here, "gsnet", "__init__.py")) as f:
    for line in f:
        if line.startswith("__version__"):
            exec(line, version)

setup(
    name="gsnet",
    version=version["__version__"],
    description="GSNet (AAAI 2025) on Detectron2: open-vocabulary remote-sensing segmentation",
    packages=find_packages(include=["gsnet", "gsnet.*"]),
    python_requires=">=3.10",
    # torch, torchvision and Detectron2 are installed by scripts/setup.sh (see README).
    install_requires=[
        "open_clip_torch",
        "timm",
        "fvcore",
        "einops",
        "opencv-python-headless",
        "pycocotools",
    ],
    extras_require={
        # tools/submit.py and gsnet.submission: training and evaluation as SLURM jobs.
        "cluster": ["submitit==1.5.4"],
        # The web demo (tools/demo.py); scripts/setup.sh installs it for the tests.
        "demo": ["gradio==6.31.0"],
    },
)
