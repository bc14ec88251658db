"""What every ``python -m dse.<command>`` shares: quiet third-party logs, clear errors."""

from __future__ import annotations

import errno
import functools
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from dse.exceptions import DSEError
from dse.file_system import unwritable_folder
from dse.worker.signals import Interrupted

__all__ = ["dse_error_of", "full_tracebacks_hint", "run_command", "writable_run_dir"]

_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_ELSEWHERE = (
    "Run from a writable directory, or point what dse writes elsewhere: hydra.run.dir=/writable/outputs "
    "storage.url=sqlite:////writable/optuna.db tracking.tracking_uri=sqlite:////writable/mlruns/mlflow.db "
    "tracking.artifact_location=/writable/mlruns/artifacts (or tracking=none)."
)

_logger = logging.getLogger("dse")


def _quiet_third_party_logs() -> None:
    """Trainer banners and per-trial Optuna lines would bury dse's own progress."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 on torch 2.14, once per Trainer
    # dse's Trainers are one process each (dse.worker.process.single_process); srun is the workers' business
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _WithoutTraceback(logging.Formatter):
    """A console formatter: a record's traceback shrinks to its last line (the log file keeps it whole)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            text = self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        if saved[0] is not None and saved[0][0] is not None:
            text += f" [{saved[0][0].__name__}; traceback in the log file]"
        return text


def _tracebacks_to_the_log_file_only() -> None:
    """Optuna logs a failed trial with its traceback: through the root logger (so Hydra's log file
    keeps it whole), shown on the terminal as one line."""
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter))


def full_tracebacks_hint() -> str:
    """`` Full tracebacks: <log file>.`` when a log file is written (Hydra's), else ""."""
    files = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return f" Full tracebacks: {files[0]}." if files else ""


def dse_error_of(exc: BaseException) -> DSEError | None:
    """The DSEError behind ``exc`` (itself, or raised inside Hydra's instantiate), or None."""
    if isinstance(exc, InstantiationException):
        exc = exc.__cause__ or exc
    return exc if isinstance(exc, DSEError) else None


def run_command(command: Callable[[DictConfig], Any], cfg: DictConfig, quiet: bool = True) -> Any:
    """Run ``command(cfg)``; a DSEError (even one raised inside Hydra's instantiate) becomes
    its one-paragraph message and exit status 2, with no traceback; a SIGINT/SIGTERM the
    command turned into :class:`Interrupted` exits 130/143 without one. ``quiet`` silences
    Lightning's and Optuna's per-step logs (searches show their own progress)."""
    if quiet:
        _quiet_third_party_logs()
    _tracebacks_to_the_log_file_only()
    try:
        return command(cfg)
    except (DSEError, InstantiationException) as exc:
        error = dse_error_of(exc)
        if error is None:
            raise
        _logger.error("%s", error)
        raise SystemExit(2) from None
    except OSError as exc:
        if exc.errno not in _NOT_WRITABLE:
            raise
        _logger.error("Cannot write %s (%s). %s", exc.filename or "a file", exc.strerror, _ELSEWHERE)
        raise SystemExit(2) from None
    except Interrupted as exc:
        if not exc.reported:
            _logger.warning("Interrupted by %s before anything was computed.", exc)
        raise SystemExit(exc.exit_code) from None


def writable_run_dir(main: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a ``@hydra.main`` function: Hydra creates its run folder (``outputs/...``, or ``hydra.run.dir=``)
    before dse runs, and a read-only working directory ends there in three chained tracebacks. One line
    instead, naming the directory and the overrides that point elsewhere; exit 2."""

    @functools.wraps(main)
    def checked() -> Any:
        args = sys.argv[1:]
        if not any(a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c") for a in args):
            _check_run_dir(args)
        return main()

    return checked


def _check_run_dir(args: Sequence[str]) -> None:
    given = [a.split("=", 1)[1] for a in args if a.lstrip("+").startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    folder = Path(given[0]) if given else Path.cwd()
    problem = unwritable_folder(folder)
    if problem is not None:
        print(f"Cannot write in {folder.absolute()} ({problem.strerror}). {_ELSEWHERE}", file=sys.stderr)
        raise SystemExit(2)
