"""``python -m dse.report``: the results report (``docs/results.md``) from resumable, stored stages.

Each stage (:data:`STAGES`, one module per section) measures what its section claims and stores it under
``report.store``; the document is rendered from the stored files only.
"""

from dse.report.benchmark_stages import EMULATION_SPEED, SEARCH_EFFICIENCY
from dse.report.context import ReportContext, RowLog
from dse.report.headline_front import STAGE as HEADLINE_FRONT
from dse.report.paper1_decimals import GROUPS, UNIFORM
from dse.report.paper2_accumulation import STAGE as ACCUMULATION
from dse.report.paper2_mitchell import STAGE as MITCHELL
from dse.report.paper3_formats import STAGE as FORMATS
from dse.report.paper4_recurrent import STAGE as RECURRENT
from dse.report.paper4_retraining import STAGE as RETRAINING
from dse.report.run import run_report
from dse.report.stage import Stage

# in the document's order
STAGES: list[Stage] = [
    UNIFORM,
    GROUPS,
    MITCHELL,
    ACCUMULATION,
    FORMATS,
    RETRAINING,
    RECURRENT,
    SEARCH_EFFICIENCY,
    EMULATION_SPEED,
    HEADLINE_FRONT,
]

__all__ = ["STAGES", "ReportContext", "RowLog", "Stage", "run_report"]
