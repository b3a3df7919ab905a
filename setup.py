"""GSNet on Detectron2: open-vocabulary remote-sensing semantic segmentation."""

import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
version = {}
with open(os.path.join(here, "gsnet", "__init__.py")) as f:
    for line in f:
        if line.startswith("__version__"):
            exec(line, version)

# Everything ``import gsnet`` imports, except Detectron2, which is not on PyPI in a usable form:
# scripts/install_detectron2.py installs it (see README). tests/test_packaging.py checks this list.
INSTALL_REQUIRES = [
    "torch",
    "numpy>=2.0,<2.3",
    "open_clip_torch",
    "timm",
    "fvcore",
    "einops",
    "opencv-python-headless",
    "pycocotools",
    "PyYAML",
    "Pillow>=10.1,<13",
    "tqdm",
]
# Optional features: "geo" reads and writes TIFF/GeoTIFF/JPEG 2000 (gsnet.raster_io, predict.py).
EXTRAS_REQUIRE = {
    "geo": ["rasterio==1.4.4"],
    # tools/submit.py and gsnet.submission: training and evaluation as SLURM jobs.
    "cluster": ["submitit==1.5.4"],
    # The web demo (tools/demo.py).
    "demo": ["gradio==6.31.0"],
    # tools/prepare_ld50k.py: reads LandDiscover50K's split zip archive.
    "data": ["stream-unzip==0.0.101"],
}

setup(
    name="gsnet",
    version=version["__version__"],
    description="GSNet (AAAI 2025) on Detectron2: open-vocabulary remote-sensing segmentation",
    packages=find_packages(include=["gsnet", "gsnet.*"]),
    python_requires=">=3.10",
    # torch and torchvision are installed first by scripts/setup.sh (pinned versions).
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
