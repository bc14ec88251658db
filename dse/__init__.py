"""dse: design-space exploration of approximate and reduced-precision DNN inference.

Entry points: ``python -m dse.search`` (a study), ``python -m dse.sensitivity``
(one unit at a time), ``python -m dse.training.train`` (a baseline). Subpackages,
one concept each: :mod:`dse.study`, :mod:`dse.multipliers`, :mod:`dse.emulation`,
:mod:`dse.numerics`, :mod:`dse.cost`, :mod:`dse.tracking`, :mod:`dse.training`,
:mod:`dse.search_spaces`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
