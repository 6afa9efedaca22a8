"""Build hook for the optional compiled engine (bnnctl.infer.fastbnn._fastbnn, issue 5).

All metadata lives in pyproject.toml; this file only declares the C extension. The extension is
optional: without a C compiler (or on an unsupported platform) the build prints one warning
and the package installs anyway, and bnnctl then runs the numpy engine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

SRC = Path("bnnctl") / "infer" / "fastbnn" / "src"
SOURCES = ["module.c", "engine.c", "isa_avx512.c", "isa_avx2.c", "isa_popcnt.c", "isa_neon.c", "isa_generic.c"]
HEADERS = ["fastbnn.h", "isa_common.h", "layers.inc", "prims_scalar.inc"]


class OptionalBuildExt(build_ext):
    """build_ext that turns any failure into a warning instead of a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all: distutils raises before building
            self._skip(exc)

    def build_extension(self, ext):
        if self.compiler.compiler_type == "msvc":
            # The engine uses GCC/Clang target attributes and pthreads.
            self._skip("MSVC is not supported")
            return
        ext.extra_compile_args = ["-O3", "-std=c11", "-pthread", "-fvisibility=hidden"]
        ext.extra_link_args = ["-pthread"]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    @staticmethod
    def _skip(reason) -> None:
        print(f"warning: bnnctl fast engine not built ({reason}); bnnctl will use the numpy engine",
              file=sys.stderr)


class BuildPyWithData(build_py):
    """Ship configs/ and hw/ inside the wheel as bnnctl/configs and bnnctl/hw.

    They live at the top of the source tree (data, and what runs on the board, are not library
    code); the package looks for them inside itself first, then beside itself in a checkout.
    """

    def run(self):
        super().run()
        for folder in ("configs", "hw"):
            for path in Path(folder).rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    target = Path(self.build_lib) / "bnnctl" / path
                    self.mkpath(str(target.parent))
                    self.copy_file(str(path), str(target))


ext_modules = []
if sys.byteorder == "little":  # the packed layouts assume little-endian words (spec conventions)
    ext_modules.append(Extension(
        "bnnctl.infer.fastbnn._fastbnn",
        sources=[str(SRC / name) for name in SOURCES],
        depends=[str(SRC / name) for name in HEADERS],
        include_dirs=[str(SRC)],
        optional=True,
    ))

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithData})
