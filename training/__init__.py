"""Lightning side of dse (installed as ``dse.training``): data, model zoo, classifier, training.

- :mod:`.cifar10`: the CIFAR-10 data module (npz or torchvision's downloader);
- :mod:`.models`: CIFAR-sized classifiers by name;
- :mod:`.classifier`: the LightningModule that trains and evaluates them;
- :mod:`.weights`: shipped checkpoints and loading any other;
- :mod:`.train`: ``python -m dse.training.train``.
"""

__all__ = ["assets", "cifar10", "classifier", "models", "train", "weights"]
