"""``docs/results.md``: the stored results of every stage, as sections, with an appendix of their sources."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dse.report.context import ReportContext
from dse.report.markdown import table
from dse.report.stage import Stage
from dse.report.verdicts import verdict_table

__all__ = ["write_document"]

_INTRO = """\
Every number below was measured by dse's own code, from the project's committed configs, and is stored
under `{store}/` (one folder per section: CSV tables and `meta.json`, which names the commit, machine,
evaluation sets, seeds and compute time). Regenerate this file from what is stored, without
evaluating anything, with `python -m dse.report report.recompute=false`; recompute one section with
`python -m dse.report report.stages=[<stage>] report.recompute=true`.

**Cost model.** Energy is modeled per inference at 45 nm (Horowitz, ISSCC 2014; `conf/hardware/`):
multiplications, additions and memory traffic, with an approximate multiplier's energy scaled by its power
ratio from EvoApprox. Every measured row is priced under both presets: `horowitz_45nm` (weights read from
DRAM for every image: memory dominates) and `horowitz_45nm_onchip` (weights on chip, shared by a batch of
64: the multiply-accumulate array is the larger share). It is a model of hardware that would be built,
never the time the emulation takes on this CPU."""


def _data(ctx: ReportContext, stages: Sequence[Stage]) -> str:
    """Which images the stored stages read: the search set, the held-out half, and their source."""
    metas = [ctx.meta(s.name) for s in stages if ctx.meta(s.name).get("complete")]
    sources = {m["test_set"]["source"] for m in metas if "test_set" in m}
    text = (
        "**Data.** CIFAR-10, whose 10,000 test images dse splits into two fixed, stratified halves: searches, "
        "screening and every choice score candidates on the *search* half (the shipped 2,000-image subset of "
        "it by default), and every accuracy this report gives is measured on the other, *held-out* half (5,000 "
        "images) unless a section says otherwise, so no reported accuracy comes from the images that chose it. "
        "Activation ranges are calibrated on 256 training images. Intervals are Wilson's 95% score intervals; "
        "a difference between two models on the same images is tested with McNemar's exact test (p). "
    )
    if "npz" in sources:
        text += (
            "The images were read from an offline `.npz` copy of CIFAR-10 whose pixels were decoded from JPEG "
            "files: they differ slightly from torchvision's download, so accuracies can differ from a run on the "
            "download by a few tenths of a point. "
        )
    if "torchvision" in sources:
        text += "Images from torchvision's CIFAR-10 download. "
    return (
        text
        + f"The model is `{ctx.cfg.model.name}` with dse's shipped weights (BatchNorm folded into the convolutions)."
    )


def _machines(ctx: ReportContext, stages: Sequence[Stage]) -> str:
    seen: dict[str, list[str]] = {}
    for stage in stages:
        machine = ctx.meta(stage.name).get("machine")
        if machine:
            key = json.dumps(machine, sort_keys=True)
            seen.setdefault(key, []).append(stage.name)
    lines = []
    for key, names in seen.items():
        m = json.loads(key)
        flags = ", ".join(m["cpu_flags"]) or "none of " + "/".join(("avx2", "avx512f"))
        lines.append(
            f"- {m['cpu']} ({m['cores']} cores available, {m['memory_gib']} GiB; SIMD: {flags}; "
            f"GPU: {m['gpu'] or 'none'}), torch {m['torch']}, Python {m['python']}, {m['os']}: "
            + ", ".join(f"`{n}`" for n in names)
        )
    return "**Machine.** Each section ran on:\n\n" + "\n".join(lines) if lines else ""


def _trial_commits(folder: Path) -> list[str]:
    """The commits a stage's study trials ran on (the ``code_commit`` column of its trial exports; a study may
    have been resumed by other code than the stage that measured it)."""
    commits: set[str] = set()
    for path in folder.glob("*.csv"):
        if "code_commit" in pd.read_csv(path, nrows=0).columns:
            commits.update(str(c) for c in pd.read_csv(path, usecols=["code_commit"])["code_commit"].dropna())
    return sorted(commits)


def _appendix(ctx: ReportContext, stages: Sequence[Stage]) -> str:
    rows, dirty = [], []
    for stage in stages:
        meta = ctx.meta(stage.name)
        if not meta.get("complete"):
            continue
        commit = str(meta.get("commit"))
        trials = _trial_commits(ctx.stage_dir(stage.name))
        if any(c.endswith("-dirty") or c == "None" for c in [commit, *trials]):
            dirty.append(stage.name)
        files = sorted(p.name for p in ctx.stage_dir(stage.name).glob("*") if p.name != "meta.json")
        rows.append(
            [
                f"`{stage.name}`",
                f"`{commit}`" + (f" (its study's trials: {', '.join(f'`{c}`' for c in trials)})" if trials else ""),
                meta.get("finished", "?"),
                f"{meta.get('compute_seconds', 0) / 60:.1f}",
                ", ".join(f"`{ctx.link(ctx.stage_dir(stage.name) / f)}`" for f in files),
            ]
        )
    text = table(["stage", "commit", "finished (UTC)", "compute (min)", "stored results (shipped)"], rows)
    text += (
        "\n\nEvery file named here is in the repository: nothing above points into a store that is not shipped "
        "(the MLflow runs and study databases a stage writes stay on the machine that computed it; the study "
        "trials are exported in full as CSV). "
    )
    if dirty:
        text += (
            "**Computed on uncommitted code** (`report.allow_dirty=true`): "
            + ", ".join(f"`{n}`" for n in dirty)
            + ". Their numbers cannot be traced to a commit; recompute them from a clean checkout."
        )
    else:
        text += "Every stage was computed from a clean commit."
    return text


def write_document(ctx: ReportContext, stages: Sequence[Stage]) -> Path:
    """Render every stage from its stored results into ``report.output``; stages not stored say how to compute."""
    out = Path(ctx.settings.output)
    parts = [
        "# dse results: the four papers reproduced or refuted, and dse's own benchmarks",
        f"Generated {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `python -m dse.report`.",
        "## Verdicts: each claim of the papers beside dse's measurement\n\n" + verdict_table(ctx),
        _INTRO.format(store=ctx.link(ctx.store)),
        _data(ctx, stages),
        _machines(ctx, stages),
    ]
    for i, stage in enumerate(stages, 1):
        if ctx.is_stored(stage.name) and stage.is_stale(ctx):
            meta = ctx.meta(stage.name)
            body = (
                f"**Stored before the held-out protocol** (commit `{meta.get('commit')}`, "
                f"{meta.get('finished', '?')}): "
                "its accuracies may come from the images that chose them and carry no per-image results for "
                "intervals or paired tests, so they are not quoted. Recompute: "
                f"`python -m dse.report report.stages=[{stage.name}] report.recompute=true`."
            )
        elif ctx.is_stored(stage.name):
            body = stage.render(ctx)
        else:
            body = f"Not computed: `python -m dse.report report.stages=[{stage.name}]` computes it."
        parts.append(f"## {i}. {stage.title}\n\n{body}")
    parts.append("## Appendix: where each number comes from\n\n" + _appendix(ctx, stages))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(p for p in parts if p) + "\n")
    return out
