"""Paper 4's recurrent layers: the shipped GRU's accuracy against approximation level, before and after retraining.

Every multiplier of ``report.recurrent.multipliers`` goes on every weight matrix and the classifier of the model
``report.recurrent.study`` configures (the GRU on JapaneseVowels), bit-exact on its held-out sequences; the
``worst`` least accurate are retrained once per seed (BPTT through the unrolled GRU), beside the exact model
fine-tuned the same way as the control. A GRU has no batch norm, so there is no re-estimation control here.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from dse.assignment import LayerConfig, targetable_layers
from dse.candidates.retraining import retrain_candidate
from dse.config_building import retrain_settings
from dse.multipliers import get_multiplier
from dse.report.context import ReportContext
from dse.report.correctness import accuracy_cell, difference_cell
from dse.report.markdown import table
from dse.report.paper4_retraining import BEFORE, EXACT, FINETUNED, RETRAINED
from dse.report.stage import Stage

__all__ = ["STAGE"]

NAME = "recurrent"


def _assignment(sub: ReportContext, multiplier: str) -> dict[str, LayerConfig]:
    return {layer: LayerConfig(multiplier=multiplier) for layer in targetable_layers(sub.model)}


def compute(ctx: ReportContext) -> None:
    s = ctx.settings.recurrent
    sub = ctx.for_study(str(s.study), keep=("tracking",))  # its own data, not CIFAR-10
    log = ctx.rows(NAME, "recurrent", ["multiplier", "variant", "seed"])
    if not log.has(multiplier=EXACT, variant=BEFORE, seed=-1):
        log.add({"multiplier": EXACT, "variant": BEFORE, "seed": -1, "mre_pct": 0.0, **sub.measure({})})
    for name in s.multipliers:
        if not log.has(multiplier=name, variant=BEFORE, seed=-1):
            mre = get_multiplier(str(name)).error_stats().mre_pct
            log.add(
                {
                    "multiplier": name,
                    "variant": BEFORE,
                    "seed": -1,
                    "mre_pct": mre,
                    **sub.measure(_assignment(sub, name)),
                }
            )
    as_is = log.table[(log.table["variant"] == BEFORE) & (log.table["multiplier"] != EXACT)]
    worst = list(as_is.sort_values("top1")["multiplier"][: int(s.worst)])
    base = retrain_settings(sub.cfg, ckpt_dir=str(ctx.work_dir / "checkpoints" / NAME))
    exact = log.get(multiplier=EXACT, variant=BEFORE)
    for name in [EXACT, *worst]:
        assignment = {} if name == EXACT else _assignment(sub, name)
        before = log.get(multiplier=name, variant=BEFORE)
        for seed in s.seeds:
            variant = FINETUNED if name == EXACT else RETRAINED
            if log.has(multiplier=name, variant=variant, seed=seed):
                continue
            settings = dataclasses.replace(base, seed=int(seed))
            metrics = {"accuracy": float(before["top1"]), "energy_uj": float(before["energy_uj"])}
            result = retrain_candidate(
                sub.model,
                assignment,
                sub.test_set,
                settings,
                f"report-gru-{name}-seed{seed}",
                sub.tracker,
                before=metrics,
            )
            log.add(
                {
                    "multiplier": name,
                    "variant": variant,
                    "seed": int(seed),
                    "mre_pct": before["mre_pct"],
                    "top1": result.accuracy_after,
                    "top5": result.accuracy_top5_after,
                    "images": exact["images"],
                    "correct": result.correct_after,
                    "energy_uj": before["energy_uj"],
                    "epochs": result.epochs,
                    "wall_time_s": result.wall_time_s,
                }
            )
    data = sub.cfg.final_eval.data
    ctx.update_meta(
        NAME,
        study=str(s.study),
        model=str(sub.cfg.model.name),
        epochs=int(base.epochs),
        test_set={"source": str(data.get("set_name", data.get("_target_"))), "test_split": data.get("test_split")},
    )


def _plot(rows: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    as_is = rows[(rows["variant"] == BEFORE) & (rows["multiplier"] != EXACT)]
    exact = rows[(rows["variant"] == BEFORE) & (rows["multiplier"] == EXACT)].iloc[0]
    fig, ax = plt.subplots(figsize=(7, 4.3))
    ax.scatter(as_is["mre_pct"].clip(lower=1e-3), 100 * as_is["top1"], s=18, label="as is (no retraining)")
    ax.axhline(100 * exact["top1"], color="black", ls="--", lw=1, label="exact float32 model")
    for name, g in rows[rows["variant"] == RETRAINED].groupby("multiplier"):
        x = max(float(g["mre_pct"].iloc[0]), 1e-3)
        start = 100 * float(as_is.set_index("multiplier").loc[name, "top1"])
        after = 100 * g["top1"]
        ax.annotate("", (x, after.mean()), (x, start), arrowprops={"arrowstyle": "->", "color": "tab:orange"})
        ax.errorbar(
            x,
            after.mean(),
            yerr=[[after.mean() - after.min()], [after.max() - after.mean()]],
            color="tab:orange",
            marker="s",
            capsize=3,
        )
    ax.scatter([], [], color="tab:orange", marker="s", label="retrained: mean, range over seeds")
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("multiplier's mean relative error per product (%, log)")
    ax.set_ylabel("top-1 on the held-out sequences (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_COLUMNS = ["multiplier", "product MRE", "as is [95% interval]", "retrained: mean (min-max)"]
_COLUMNS += ["retrained vs exact per seed (points, p)"]


def render(ctx: ReportContext) -> str:
    rows = ctx.table(NAME, "recurrent")
    meta = ctx.meta(NAME)
    exact = rows[(rows["variant"] == BEFORE) & (rows["multiplier"] == EXACT)].iloc[0]
    as_is = rows[(rows["variant"] == BEFORE) & (rows["multiplier"] != EXACT)].sort_values("mre_pct")
    figure = ctx.figure("paper4_recurrent.png")
    _plot(rows, str(figure))
    within = as_is[100 * (exact["top1"] - as_is["top1"]) <= 1.0]
    spearman = as_is["mre_pct"].corr(as_is["top1"], method="spearman")
    finetuned = rows[rows["variant"] == FINETUNED]["top1"]
    lines = []
    for name, g in rows[rows["variant"] == RETRAINED].groupby("multiplier", sort=False):
        before = as_is.set_index("multiplier").loc[name]
        lines.append(
            [
                name,
                f"{before['mre_pct']:.2f}%",
                accuracy_cell(before),
                f"{100 * g['top1'].mean():.2f}% ({100 * g['top1'].min():.2f}-{100 * g['top1'].max():.2f})",
                "; ".join(difference_cell(r, exact) for _, r in g.sort_values("seed").iterrows()),
            ]
        )
    n = int(exact["images"])
    return "\n\n".join(
        [
            f"`{meta.get('model')}` (study `{meta.get('study')}`): each of {len(as_is)} multipliers on every weight "
            f"matrix (input-to-hidden, hidden-to-hidden) and the classifier, bit-exact on the {n} held-out "
            f"sequences. The exact model: {accuracy_cell(exact)}. **{len(within)} of {len(as_is)}** multipliers stay "
            f"within 1 point of it without retraining; accuracy falls with the multiplier's mean relative error "
            f"(Spearman {spearman:+.2f}).",
            f"![GRU accuracy against approximation level]({ctx.link(figure)})",
            f"**The {len(lines)} least accurate, retrained** ({meta.get('epochs')} epochs of the training "
            "sequences, once per seed; each seed's difference from the exact model paired on the same sequences). "
            f"Control: the exact model fine-tuned the same way scores "
            f"{100 * finetuned.mean():.2f}% ({100 * finetuned.min():.2f}-{100 * finetuned.max():.2f}) over "
            f"{len(finetuned)} seeds.",
            table(_COLUMNS, lines),
        ]
    )


STAGE = Stage(
    NAME,
    "Paper 4: recurrent layers against approximation level",
    compute,
    render,
    reads_test_set=False,
    held_out_table=NAME,
)
