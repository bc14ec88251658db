"""Exact integer low-rank factorization of a multiplier's error table.

``E = lut - a*b`` has low rank for many circuits (signed EvoApprox: 1-4). An
SVD would factor it with real numbers, exact only up to rounding. Here
``E = A @ B`` with *integer* A (S x r) and B (r x S): B is an echelon basis of
the lattice spanned by E's rows (built with unimodular gcd steps, so every row
of E is an integer combination of it) and A holds those combinations. Sums of
integer products are then exact in floating point below 2^24 (float32).
"""

from __future__ import annotations

import numpy as np

__all__ = ["integer_factorization"]


def _egcd(a: int, b: int) -> tuple[int, int, int]:
    """g, s, t with s*a + t*b = g = gcd(a, b) >= 0."""
    s0, s1, t0, t1 = 1, 0, 0, 1
    while b:
        q, a, b = a // b, b, a % b
        s0, s1 = s1, s0 - q * s1
        t0, t1 = t1, t0 - q * t1
    return (a, s0, t0) if a >= 0 else (-a, -s0, -t0)


def integer_factorization(error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer A (m x r), B (r x n) with ``A @ B == error`` and r = rank(error).

    >>> E = np.array([[2, 4], [3, 6], [0, 0]])
    >>> A, B = integer_factorization(E)
    >>> bool((A @ B == E).all()), B.shape[0]
    (True, 1)
    """
    rows = [np.array([int(v) for v in row], dtype=object) for row in np.asarray(error)]
    basis: dict[int, np.ndarray] = {}  # pivot column -> row with zeros before it
    for row in rows:
        v = row.copy()
        while True:
            nonzero = np.flatnonzero(v != 0)
            if len(nonzero) == 0:
                break
            c = int(nonzero[0])
            if c not in basis:
                basis[c] = v if v[c] > 0 else -v
                break
            b = basis[c]
            g, s, t = _egcd(int(b[c]), int(v[c]))
            basis[c], v = s * b + t * v, (int(b[c]) // g) * v - (int(v[c]) // g) * b  # unimodular on (b, v)
    pivots = sorted(basis)
    B = np.array([basis[p] for p in pivots], dtype=object).reshape(len(pivots), len(rows[0]) if rows else 0)
    A = np.zeros((len(rows), len(pivots)), dtype=object)
    for i, row in enumerate(rows):
        rest = row.copy()
        for j, p in enumerate(pivots):
            coef, remainder = divmod(int(rest[p]), int(B[j, p]))
            assert remainder == 0, "row outside the lattice: factorization bug"
            A[i, j] = coef
            rest = rest - coef * B[j]
        assert not np.any(rest != 0), "factorization bug: residual"
    if (A.size and max(abs(int(v)) for v in A.flat) >= 2**53) or (B.size and max(abs(int(v)) for v in B.flat) >= 2**53):
        raise OverflowError("integer factors exceed 2^53")
    return A.astype(np.int64), B.astype(np.int64)
