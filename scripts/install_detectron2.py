"""Install Detectron2 into the running Python environment.

Detectron2 has no release on PyPI. Two routes, tried in order:

1. "official": pip-install Detectron2's own source repository at a pinned commit, when the source
   host answers within a few seconds (it needs a C++ toolchain and builds the compiled ops).
2. "pypi-wheel": download the PyPI wheel ``sal-detectron2==0.7.2`` (a redistribution of
   Detectron2's main branch, built for CPython 3.10), keep its pure-Python ``detectron2`` package
   without the compiled ``_C`` extension (GSNet uses none of the compiled ops), and install it as
   a local pure-Python wheel named ``detectron2`` so that pip knows it.

The route taken and the installed version are printed. Already installed: nothing is done
(``--force`` reinstalls). ``--route`` forces one route.
"""

import argparse
import base64
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import zipfile

OFFICIAL_REPO = "https://github.com/facebookresearch/detectron2.git"
# Detectron2's main branch of 2024-11-21 (the code the PyPI redistribution below was built from).
OFFICIAL_COMMIT = "c69939aa85460e8135f40bce908a6cddaa73065f"
PYPI_WHEEL = "sal-detectron2==0.7.2"
LOCAL_VERSION = "0.7.2+sal"
# Detectron2's own run-time requirements, minus its NumPy < 2 pin (see README, "NumPy 2").
REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore",
    "iopath",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    "packaging",
]


def log(message):
    print(f"[detectron2] {message}", flush=True)


def installed_version():
    try:
        return importlib.metadata.version("detectron2")
    except importlib.metadata.PackageNotFoundError:
        return None


def pip(*args):
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def official_source_reachable(timeout_s=10):
    try:
        subprocess.run(
            ["git", "ls-remote", "--exit-code", OFFICIAL_REPO, "HEAD"],
            check=True,
            timeout=timeout_s,
            capture_output=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def install_official():
    pip("install", "--no-build-isolation", f"git+{OFFICIAL_REPO}@{OFFICIAL_COMMIT}")


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_pure_wheel(source_wheel, out_dir):
    """Repackage the ``detectron2/`` tree of ``source_wheel`` as a pure-Python wheel."""
    dist_info = f"detectron2-{LOCAL_VERSION}.dist-info"
    wheel_path = os.path.join(out_dir, f"detectron2-{LOCAL_VERSION}-py3-none-any.whl")
    metadata = (
        "\n".join(
            [
                "Metadata-Version: 2.1",
                "Name: detectron2",
                f"Version: {LOCAL_VERSION}",
                "Summary: Detectron2 (pure-Python part of the PyPI wheel sal-detectron2==0.7.2)",
                "Requires-Python: >=3.8",
            ]
            + [f"Requires-Dist: {req}" for req in REQUIRES]
        )
        + "\n"
    )
    wheel_meta = "Wheel-Version: 1.0\nGenerator: gsnet\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    records = []
    kept = 0
    with (
        zipfile.ZipFile(source_wheel) as src,
        zipfile.ZipFile(wheel_path, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            name = info.filename
            if not name.startswith("detectron2/") or name.endswith((".so", ".pyd")):
                continue
            data = src.read(info)
            dst.writestr(name, data)
            records.append(_record_line(name, data))
            kept += 1
        if kept == 0:
            raise RuntimeError(f"{source_wheel} holds no detectron2/ package")
        for name, text in (
            ("METADATA", metadata),
            ("WHEEL", wheel_meta),
            ("top_level.txt", "detectron2\n"),
        ):
            data = text.encode()
            dst.writestr(f"{dist_info}/{name}", data)
            records.append(_record_line(f"{dist_info}/{name}", data))
        records.append(f"{dist_info}/RECORD,,")
        dst.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return wheel_path


def install_from_pypi_wheel():
    with tempfile.TemporaryDirectory() as tmp:
        pip(
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.10",
            "--implementation",
            "cp",
            "-d",
            tmp,
            PYPI_WHEEL,
        )
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel from 'pip download {PYPI_WHEEL}', got {wheels}")
        wheel = build_pure_wheel(os.path.join(tmp, wheels[0]), tmp)
        pip("install", "--quiet", "--force-reinstall", "--no-deps", wheel)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", choices=["auto", "official", "pypi-wheel"], default="auto")
    parser.add_argument("--force", action="store_true", help="reinstall even if installed")
    args = parser.parse_args()

    version = installed_version()
    if version and not args.force:
        log(f"already installed: detectron2 {version}")
        return
    route = args.route
    if route == "auto":
        log(f"checking whether the official source is reachable: {OFFICIAL_REPO}")
        route = "official" if official_source_reachable() else "pypi-wheel"
    if route == "official":
        log(f"route: official source at commit {OFFICIAL_COMMIT}")
        install_official()
    else:
        log(f"route: PyPI wheel {PYPI_WHEEL}, pure-Python part (official source unreachable)")
        install_from_pypi_wheel()
    import detectron2  # noqa: F401  (fails loudly if the install is unusable)

    log(f"installed: detectron2 {installed_version()} via the {route} route")


if __name__ == "__main__":
    main()
