"""``python -m dse.report [report.stages=[...]] [report.recompute=true|false]`` (``conf/report.yaml``)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dse.cli import run_command, writable_run_dir
from dse.config_paths import CONFIG_DIR
from dse.report import STAGES, ReportContext, run_report


@writable_run_dir
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="report")
def main(cfg: DictConfig) -> None:
    # the model, data and hardware overrides apply to the studies and benchmarks the stages run too
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("report.")]
    run_command(lambda c: run_report(ReportContext(c, overrides), STAGES), cfg)


if __name__ == "__main__":
    main()
