"""orbax checkpoints in the canonical per-layer layout, with the model config and a format
version, restorable into any plan's shardings (abstract targets carry the NamedShardings).

Saves are atomic (orbax writes a temporary directory, then renames it): a save killed midway
leaves the previous checkpoint restorable. Every failure to load is a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from jaxpart.config import ConfigError, ModelConfig

FORMAT_VERSION = 1
MODEL_FIELDS = ("n_layers", "d_model", "n_heads", "head_dim", "d_ff", "vocab", "dtype")
# Fields added later: a checkpoint saved before them has their defaults.
LATER_FIELDS = {
    "n_kv_heads": None,
    "mlp": "gelu",
    "tie_embeddings": False,
    "attention_bias": False,
    "qk_norm": False,
    "norm_plus_one": False,
    "sandwich_norms": False,
    "scale_embeddings": False,
    "query_pre_attn_scalar": 0.0,
    "attn_softcap": 0.0,
    "final_softcap": 0.0,
}


class CheckpointError(ConfigError):
    pass


def model_signature(cfg: ModelConfig) -> dict:
    fields = (*MODEL_FIELDS, *LATER_FIELDS)
    return {"name": cfg.name, **{f: getattr(cfg, f) for f in fields}}


def _manager(directory: str, create: bool) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        Path(directory).resolve(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=create),
    )


def save(
    directory: str, step: int, params, cfg: ModelConfig, opt_state=None, extra: dict | None = None
) -> None:
    """Save ``params`` (canonical layout; any sharding) and optionally the optimizer state."""
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model_signature(cfg),
        "step": step,
        **(extra or {}),
    }
    items = {"params": ocp.args.StandardSave(params), "meta": ocp.args.JsonSave(meta)}
    if opt_state is not None:
        items["opt_state"] = ocp.args.StandardSave(opt_state)
    try:
        mngr = _manager(directory, create=True)
        mngr.save(step, args=ocp.args.Composite(**items))
        mngr.wait_until_finished()
        mngr.close()
    except Exception as e:  # a full disk, a vanished folder, permissions: orbax's many types
        raise CheckpointError(
            f"{_where(directory)}: cannot save step {step} ({_first_line(e)})"
        ) from None


def latest_step(directory: str) -> int | None:
    if not Path(directory).is_dir():
        return None
    try:
        mngr = _manager(directory, create=False)
        step = mngr.latest_step()
        mngr.close()
    except Exception as e:  # an unreadable or damaged folder
        raise CheckpointError(f"{_where(directory)}: cannot read it ({_first_line(e)})") from None
    return step


def _first_line(e: Exception) -> str:
    """What an orbax / tensorstore error says, in one line, without their internals."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text.split(" See full TensorStore details")[0].split(" [source locations=")[0]
    return f"{type(e).__name__}: {text[:120]}" if text else type(e).__name__


def _where(directory: str) -> str:
    return f"--checkpoint = {directory!r}"


def _restore_items(directory: str, step: int, **items) -> dict:
    mngr = _manager(directory, create=False)
    try:
        return mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types for a damaged directory
        raise CheckpointError(
            f"{_where(directory)}: step {step} is incomplete or corrupt ({_first_line(e)})"
        ) from None
    finally:
        mngr.close()


def read_meta(directory: str, cfg: ModelConfig, step: int | None = None) -> tuple[int, dict]:
    """The newest (or given) step and its metadata, checked against ``cfg``."""
    step = latest_step(directory) if step is None else step
    if step is None:
        raise CheckpointError(f"{_where(directory)}: no checkpoint there (missing or empty)")
    meta = _restore_items(directory, step, meta=ocp.args.JsonRestore())["meta"]
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise CheckpointError(f"{_where(directory)}: step {step} has no format version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{_where(directory)}: format version {version} is newer than this jaxpart reads "
            f"({FORMAT_VERSION}); upgrade jaxpart"
        )
    saved = meta.get("model", {})
    saved = {**LATER_FIELDS, "n_kv_heads": saved.get("n_heads"), **saved}
    for f in (*MODEL_FIELDS, *LATER_FIELDS):
        if saved.get(f) != getattr(cfg, f):
            raise CheckpointError(
                f"{_where(directory)}: saved for model {saved.get('name')!r} with {f} = "
                f"{saved.get(f)!r}, but --model {cfg.name!r} has {f} = {getattr(cfg, f)!r}"
            )
    return step, meta


def restore(directory: str, cfg: ModelConfig, target, opt_target=None, step: int | None = None):
    """Restore into ``target`` (a tree of ShapeDtypeStructs with shardings: any plan's).

    Returns (params, opt_state or None, step, meta).
    """
    step, meta = read_meta(directory, cfg, step)
    items = {"params": ocp.args.StandardRestore(target)}
    if opt_target is not None:
        items["opt_state"] = ocp.args.StandardRestore(opt_target)
    out = _restore_items(directory, step, **items)
    return out["params"], out.get("opt_state") if opt_target is not None else None, step, meta


def abstract_like(tree, sharding=None):
    """ShapeDtypeStructs of ``tree``, each with ``sharding`` (or its own)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding), tree
    )
