"""A candidate (knobs assigned to the trained model's layers: :mod:`dse.assignment`), applied, measured, retrained.

- :mod:`.transform`: the assignment applied to a copy of the model;
- :mod:`.evaluation`: accuracy (per image) and measured time on one data set;
- :mod:`.evaluator`: every metric of a candidate, the cost model's included;
- :mod:`.evaluation_cache`: evaluations kept on disk, for benchmarks that replay a search;
- :mod:`.retraining`: a candidate fine-tuned with its approximation in the forward pass.
"""
