"""Build hook: ship the repository's zoo/ inside the wheel as netspec/_zoo/.

Everything else about the package is in pyproject.toml.  The zoo stays at the top of the
repository (zoo/<name>/manifest.yaml, beside models/ and solvers/), where a fresh clone and an
editable install read it; netspec.zoo.builtin_dir() prefers netspec/_zoo when a wheel put it
there.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithZoo(build_py):
    def run(self):
        super().run()
        src = ROOT / "zoo"
        if src.is_dir() and not getattr(self, "editable_mode", False):
            dst = Path(self.build_lib) / "netspec" / "_zoo"
            shutil.copytree(src, dst, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".*"))


setup(cmdclass={"build_py": BuildWithZoo})
