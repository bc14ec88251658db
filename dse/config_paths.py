"""Where dse's Hydra configs live, for source checkouts and installed wheels.

An editable install runs from the checkout, whose ``conf/`` sits beside ``dse/``;
a wheel carries the same files as ``dse/conf``. Never the working directory.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR"]

_HERE = Path(__file__).resolve().parent
CONFIG_DIR = _HERE / "conf" if (_HERE / "conf").is_dir() else _HERE.parent / "conf"
