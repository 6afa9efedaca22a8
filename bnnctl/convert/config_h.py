"""`config.h` for rebuilding an overlay: the per-layer defines of the folding table (spec §1.4).

The board does not read it; it documents the folding the files were packed for, in the
define names the BNN-PYNQ HLS sources use.
"""

from __future__ import annotations

from bnnctl.topology import NetworkSpec


def config_h_text(spec: NetworkSpec) -> str:
    lines = [
        f"// {spec.name}: folding of the parameter files in this folder (written by bnnctl).",
        "// PE/SIMD/WMEM/TMEM are identical for the pynqZ1-Z2 and ultra96 overlays.",
        "",
    ]
    for layer in spec.layers:
        n = f"L{layer.index}"
        if layer.kind == "conv":
            defines = [("K", layer.kernel), ("IFM_CH", layer.in_channels), ("IFM_DIM", layer.in_dim),
                       ("OFM_CH", layer.out_channels), ("OFM_DIM", layer.out_dim)]
        else:
            defines = [("MW", layer.mw), ("MH", layer.mh)]
        # The score layer's "API" is its 16-bit output width, as in the shipped config.h files.
        api = layer.thresholds if layer.thresholds else 16
        defines += [("SIMD", layer.simd), ("PE", layer.pe), ("WMEM", layer.wmem), ("TMEM", layer.tmem),
                    ("WPI", layer.weight_bits), ("API", api), ("WPF", 0), ("APF", 0)]
        lines += [f"#define {n}_{key} {value}" for key, value in defines]
        lines.append("")
    return "\n".join(lines)
