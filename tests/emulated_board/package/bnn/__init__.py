"""EMULATION -- NOT HARDWARE. A test double of the BNN-PYNQ board package `bnn` (spec
bnn-pynq-format.md §5), installed into a temporary "site-packages" of an emulated board by
bnnctl's tests. No FPGA, no bitstream, no PYNQ: results are computed on the test machine with
bnnctl's own numpy engine (see emulation.json next to this file). Never ship it."""

from .bnn import *  # noqa: F401,F403  (the real package exposes its API at the top level too)
