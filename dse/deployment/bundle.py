"""The deployment bundle: a manifest (checked against its JSON schema), the ONNX model and the assignment,
written to a temporary directory beside the target and renamed into place, so a failure leaves nothing.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import jsonschema
import pandas as pd

from dse.exceptions import ConfigError
from dse.file_system import unwritable_folder
from dse.multipliers import LutMultiplier, get_multiplier

from .layer_arithmetic import LayerDeployment

__all__ = ["MANIFEST_SCHEMA", "check_target", "layer_records", "manifest_schema", "write_bundle"]

MANIFEST_SCHEMA = "manifest.schema.json"


def manifest_schema() -> dict:
    """The manifest's JSON schema (shipped beside this module, copied into every bundle)."""
    return json.loads(resources.files("dse.deployment").joinpath(MANIFEST_SCHEMA).read_text())


def check_target(target: Path) -> None:
    """Refuse, before any work, a bundle directory that exists or whose parent cannot be written."""
    if target.exists():
        raise ConfigError(f"{target} already exists; remove it or choose another export.out_dir=<dir>.")
    problem = unwritable_folder(target.parent)
    if problem is not None:
        raise ConfigError(
            f"Cannot write the bundle in {target.parent.absolute()} ({problem.strerror}); "
            "choose a writable export.out_dir=<dir>."
        )


def layer_records(plan: Mapping[str, LayerDeployment], costs: pd.DataFrame) -> list[dict[str, object]]:
    """The manifest's per-layer entries: arithmetic, where it runs, and the cost model's figures."""
    by_layer = costs.set_index("layer")
    records: list[dict[str, object]] = []
    for name, row in by_layer.iterrows():
        layer = plan.get(str(name))
        config = layer.config if layer else None
        records.append(
            {
                "name": str(name),
                "kind": str(row["kind"]),
                "runtime": layer.runtime if layer else "onnx",
                "note": layer.note if layer else "float32 (not in the assignment)",
                "decimals": config.decimals if config else None,
                "multiplier": _multiplier_record(config.multiplier) if config and config.multiplier else None,
                "weight": layer.weight_rounding.as_record() if layer and layer.weight_rounding else None,
                "activation": layer.input_rounding.as_record() if layer and layer.input_rounding else None,
                "activation_range": list(layer.input_range) if layer and layer.input_range else None,
                "cost": {
                    "macs": int(row["macs"]),
                    "energy_pj": _number(row["total_pj"]),
                    "modeled_latency_us": _number(row["latency_us"]),
                    "weight_bits": _number(row["weight_bits"]),
                    "activation_bits": _number(row["activation_bits"]),
                },
            }
        )
    return records


def _number(value: object) -> float | None:
    """A float for JSON; NaN (e.g. no latency model) becomes null."""
    x = float(value)  # type: ignore[arg-type]
    return None if math.isnan(x) else x


def _multiplier_record(name: str) -> dict[str, object]:
    m = get_multiplier(name)
    if ":" in name:  # a table file of the user's (path.npz:circuit)
        table = f"lookup table {name.rsplit(':', 1)[1]!r} of {name.rsplit(':', 1)[0]}"
    elif isinstance(m, LutMultiplier):
        table = "lookup table of the EvoApprox 8-bit library shipped with dse (dse/multipliers/data)"
    else:
        table = f"computed by its formula ({type(m).__name__})"
    return {
        "name": name,
        "bits": m.bits,
        "signed": m.signed,
        "exact": m.is_exact,
        "table": table,
        "mean_relative_error_pct": m.error_stats().mre_pct,
        "power_source": m.power_source,
    }


def write_bundle(target: Path, manifest: dict, files: Mapping[str, bytes]) -> Path:
    """Check ``manifest`` against the schema, write it with ``files`` to a temporary directory beside
    ``target``, then rename it to ``target``; on any failure nothing is left behind."""
    schema = manifest_schema()
    try:
        jsonschema.validate(manifest, schema)
    except jsonschema.ValidationError as exc:  # a bug in dse, not the user's input: say where
        raise RuntimeError(f"The manifest does not match its schema at {list(exc.path)}: {exc.message}") from exc
    check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        (partial / MANIFEST_SCHEMA).write_text(json.dumps(schema, indent=2) + "\n")
        for name, payload in files.items():
            (partial / name).write_bytes(payload)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
