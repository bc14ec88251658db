"""What every ``python -m dse.<command>`` shares: quiet third-party logs, clear errors."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from dse.exceptions import DSEError
from dse.worker.signals import Interrupted

__all__ = ["run_command"]

_logger = logging.getLogger("dse")


def _quiet_third_party_logs() -> None:
    """Trainer banners and per-trial Optuna lines would bury dse's own progress."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 on torch 2.14, once per Trainer
    # dse's Trainers are one process each (dse.worker.process.single_process); srun is the workers' business
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_command(command: Callable[[DictConfig], Any], cfg: DictConfig, quiet: bool = True) -> Any:
    """Run ``command(cfg)``; a DSEError (even one raised inside Hydra's instantiate) becomes
    its one-paragraph message and exit status 2, with no traceback; a SIGINT/SIGTERM the
    command turned into :class:`Interrupted` exits 130/143 without one. ``quiet`` silences
    Lightning's and Optuna's per-step logs (searches show their own progress)."""
    if quiet:
        _quiet_third_party_logs()
    try:
        return command(cfg)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, DSEError):
            _logger.error("%s", exc.__cause__)
            raise SystemExit(2) from None
        raise
    except DSEError as exc:
        _logger.error("%s", exc)
        raise SystemExit(2) from None
    except Interrupted as exc:
        if not exc.reported:
            _logger.warning("Interrupted by %s before anything was computed.", exc)
        raise SystemExit(exc.exit_code) from None
