"""The compiled lookup kernel: one table read per multiply-accumulate, for any 8x8 table, on CPU.

``kernels/lut_conv.cpp`` is built on first use with :func:`torch.utils.cpp_extension.load`
(gcc/g++ and ninja), never at import, into a cache folder keyed by the source's hash
(``$DSE_KERNEL_CACHE``, default ``~/.cache/dse/kernels``): one build per source version,
shared by every multiplier and process (the table is data, not a compile-time constant).
The build is portable (no ``-march=native``); the CPU's best variant (AVX-512 VBMI byte
permutes, AVX2 gathers, or scalar) is picked at run time.

Where it cannot be built (no compiler, no ninja, a failed build), :func:`load_kernel`
warns once and returns None, and layers use the pure-PyTorch paths: slower, equally exact.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from ._exact_sums import INT32_EXACT

__all__ = ["KernelTables", "KernelUnavailableWarning", "kernel_conv2d", "load_kernel"]

_logger = logging.getLogger(__name__)
_SOURCE = Path(__file__).resolve().parent / "kernels" / "lut_conv.cpp"
_LOCK = threading.Lock()
_STATE: dict[str, ModuleType | None] = {}  # the one loaded module (or None after a failed build), per process


class KernelUnavailableWarning(UserWarning):
    """The compiled lookup kernel could not be built; emulation falls back to PyTorch paths."""


def _cache_dir(digest: str) -> Path:
    root = Path(os.environ.get("DSE_KERNEL_CACHE", Path.home() / ".cache" / "dse" / "kernels")).expanduser()
    return root / f"lut_conv_{digest}_torch{torch.__version__.split('+')[0]}"


def _build() -> ModuleType:
    from torch.utils.cpp_extension import load

    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:16]
    folder = _cache_dir(digest)
    folder.mkdir(parents=True, exist_ok=True)
    _logger.info("Loading the lookup kernel from %s (compiled on first use, about a minute)", folder)
    return load(
        name=f"dse_lut_conv_{digest}",
        sources=[str(_SOURCE)],
        extra_cflags=["-O3", "-fopenmp"],  # at::parallel_for: PyTorch's own OpenMP pool (its libgomp.so.1)
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        verbose=False,
    )


def load_kernel() -> ModuleType | None:
    """The compiled kernel module, building it on first call; None (after one warning) if it cannot be built."""
    with _LOCK:
        if "module" not in _STATE:
            try:
                _STATE["module"] = _build()
            except Exception as exc:  # no compiler, no ninja, a compile error: fall back, exactly
                _STATE["module"] = None
                warnings.warn(
                    f"dse could not build its compiled lookup kernel ({type(exc).__name__}: {str(exc)[:300]}). "
                    "Approximate multipliers are emulated with the slower PyTorch paths, bit-exact all the same. "
                    "Install gcc, g++ and ninja (pip install ninja) to enable it.",
                    KernelUnavailableWarning,
                    stacklevel=3,
                )
        return _STATE["module"]


class KernelTables:
    """A multiplier's table in the kernel's layouts, built once per table.

    ``rows32[w, a] = lut[a, w]`` (the weight-specific rows, int32), and, when every entry
    fits 16 bits (int16 for signed tables, uint16 for unsigned) and the operands are
    8-bit, the rows' low and high bytes for the AVX-512 VBMI variant.
    """

    def __init__(self, lut: np.ndarray, signed: bool) -> None:
        lut = np.asarray(lut, dtype=np.int64)
        self.size = lut.shape[0]
        self.max_term = int(np.abs(lut).max())
        self.rows32 = torch.from_numpy(np.ascontiguousarray(lut.T).astype(np.int32))
        lo, hi = (-(2**15), 2**15 - 1) if signed else (0, 2**16 - 1)
        self.unsigned_words = not signed
        if self.size == 256 and lut.min() >= lo and lut.max() <= hi:
            words = np.ascontiguousarray(lut.T).astype(np.int64) & 0xFFFF
            self.lo8 = torch.from_numpy((words & 0xFF).astype(np.uint8))
            self.hi8 = torch.from_numpy((words >> 8).astype(np.uint8))
        else:
            self.lo8 = self.hi8 = torch.empty(0, dtype=torch.uint8)

    def fits(self, terms_per_output: int) -> bool:
        """Whether int32 sums of ``terms_per_output`` entries are exact."""
        return terms_per_output * self.max_term < INT32_EXACT


def kernel_conv2d(
    module: ModuleType,
    x_idx: torch.Tensor,
    w_idx: torch.Tensor,
    tables: KernelTables,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    variant: int = -1,
    with_xsum: bool = False,
    zero_points: tuple[torch.Tensor, torch.Tensor, int] | None = None,
) -> list[torch.Tensor]:
    """int32 ``sum_k lut[x_k, w_k]`` of a conv over an already padded input of table indices (CPU),
    and with ``with_xsum`` the int32 ``sum_k x_k`` per group (N, groups, H', W') as a second tensor.

    ``zero_points = (zw, wsum, zx)`` (int64 per output channel, and the activations' zero point)
    returns the zero-point-corrected sums ``acc - zw sum_k x_k - zx wsum + K zx zw`` instead,
    computed exactly in int64; the caller makes sure they fit int32."""
    empty = torch.empty(0, dtype=torch.int64)
    zw, wsum, zx = zero_points if zero_points is not None else (empty, empty, 0)
    return module.lut_conv2d(
        x_idx.to(torch.uint8).contiguous(),
        w_idx.to(torch.uint8).contiguous(),
        tables.rows32,
        tables.lo8,
        tables.hi8,
        tables.unsigned_words,
        stride[0],
        stride[1],
        dilation[0],
        dilation[1],
        groups,
        variant,
        with_xsum,
        zw,
        wsum,
        zx,
    )
