"""Build step that pyproject.toml cannot declare: ship the top-level ``benchmarks.toml``."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """Copy the project's top-level ``benchmarks.toml`` into the built package as
    ``oodbench/benchmarks.toml`` (an editable install reads the top-level file itself)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib, "oodbench", "benchmarks.toml")
            self.copy_file(str(Path(__file__).parent / "benchmarks.toml"), str(target))


setup(cmdclass={"build_py": BuildPy})
