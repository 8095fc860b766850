"""Anchor servers for benchmarks: llama.cpp's llama-server built from the very llama.cpp source that
the installed llama-cpp-python vendors (its PyPI sdist ships it under vendor/llama.cpp)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
from pathlib import Path


def llama_server_binary(cache: Path) -> Path:
    """Download the sdist of the installed llama-cpp-python and build llama-server once."""
    version = importlib.metadata.version("llama-cpp-python")
    root = cache / f"llama-cpp-python-{version}"
    binary = root / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    sdist_dir = cache / "sdist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            str(sdist_dir),
        ],
        check=True,
    )
    [archive] = sdist_dir.glob(f"llama_cpp_python-{version}.tar.gz")
    source = cache / f"llama_cpp_python-{version}"
    if not source.is_dir():
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    vendored = source / "vendor" / "llama.cpp"
    build = root / "build"
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
    ]
    subprocess.run(["cmake", "-S", str(vendored), "-B", str(build), *flags], check=True)
    jobs = str(os.cpu_count() or 2)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True)
    return binary


if __name__ == "__main__":
    print(llama_server_binary(Path(__file__).parent / ".cache"))
