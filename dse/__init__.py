"""dse: design-space exploration of approximate and reduced-precision DNN inference.

Commands (``python -m dse.<command>``; each composes its Hydra config and calls the library):
``search`` (a study), ``retrain``, ``compare``, ``status``, ``sensitivity``, ``report``, and
``training.train`` (a baseline). What they share: :mod:`dse.cli`, :mod:`dse.config_building`,
:mod:`dse.config_paths`.

The library, bottom-up (a layer imports only from the layers below it):
:mod:`dse.exceptions`; :mod:`dse.numerics`; :mod:`dse.multipliers`; the vocabulary
(:mod:`dse.assignment`, :mod:`dse.objectives`, :mod:`dse.store_urls`, :mod:`dse.optuna_internals`);
:mod:`dse.emulation`, :mod:`dse.cost`, :mod:`dse.search_spaces`, :mod:`dse.worker`,
:mod:`dse.tracking`; :mod:`dse.training`; :mod:`dse.candidates`; :mod:`dse.study`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
