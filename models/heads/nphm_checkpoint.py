"""Reading NPHM checkpoints: file layouts, release key names, sizes, and errors that say what is wrong.

Layouts and key names are documented in docs/nphm_checkpoint.md. Everything is read with
torch.load(weights_only=True); nothing in a checkpoint is executed.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from models.heads.nphm_config import NPHMConfig

# Dict entries that hold the actual state dict in common wrappers: Lightning / generic trainers,
# and the NPHM release's training checkpoints (checkpoint_epoch_<n>.tar).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "decoder_state_dict")

# NPHM release module names -> ours, per part.
RELEASE_KEY_RENAMES = {
    "identity": [(r"^ensembled_deep_sdf\.lin(\d+)\.", r"members.layers.\1."), (r"^mlp_pos\.", "anchor_mlp.")],
    "deformation": [(r"^defDeepSDF\.lin(\d+)\.", r"mlp.layers.\1."), (r"^compressor\.0\.", "compressor.")],
}

# Which config fields shape the parameters under each prefix (hint when sizes cannot be read).
FIELDS_BY_PREFIX = {
    "identity.members.": "identity_hidden_dim, identity_layers, identity_global_dim, identity_local_dim, "
    "n_anchors, n_symmetric_pairs",
    "identity.anchor_mlp.": "anchor_mlp_dim, identity_global_dim, n_anchors",
    "identity.anchor_mean": "n_anchors",
    "deformation.compressor.": "compressed_identity_dim, identity_global_dim, identity_local_dim, n_anchors",
    "deformation.mlp.": "deformation_hidden_dim, deformation_layers, expression_dim, compressed_identity_dim",
}

ANCHOR_MEAN_KEY = "identity.anchor_mean"


class NPHMCheckpointError(ValueError):
    """A checkpoint file that is unreadable, not an NPHM checkpoint, or does not fit the config."""


@dataclass
class NPHMCheckpoint:
    state_dict: dict[str, torch.Tensor]  # our key names: identity.* and deformation.*
    source: str  # the file(s), for messages
    stored_config: NPHMConfig | None = None

    @property
    def config(self) -> NPHMConfig:
        """The config saved with the checkpoint, else the sizes read from its tensor shapes."""
        if self.stored_config is not None:
            return self.stored_config
        try:
            return infer_nphm_config(self.state_dict)
        except (KeyError, IndexError, ValueError) as err:
            raise NPHMCheckpointError(
                f"NPHM checkpoint {self.source}: cannot read the model sizes from it ({err}); "
                f"pass config=NPHMConfig(...) explicitly"
            ) from err


def read_nphm_checkpoint(
    path: str | PathLike,
    deformation_path: str | PathLike | None = None,
    anchor_mean_path: str | PathLike | None = None,
) -> NPHMCheckpoint:
    """One file (any single-file layout) or the release's identity + expression files."""
    if deformation_path is None:
        checkpoint = _read_single_file(Path(path))
    else:
        identity = _part_state_dict(_unwrap(_load_file(Path(path)), Path(path)), "identity", Path(path))
        expression = _part_state_dict(
            _unwrap(_load_file(Path(deformation_path)), Path(deformation_path)), "deformation", Path(deformation_path)
        )
        checkpoint = NPHMCheckpoint(
            state_dict=identity | expression,
            source=f"'{path}' (identity) + '{deformation_path}' (deformation)",
        )
    if anchor_mean_path is not None:
        checkpoint.state_dict[ANCHOR_MEAN_KEY] = _read_anchor_mean(Path(anchor_mean_path))
    return checkpoint


def infer_nphm_config(state_dict: Mapping[str, torch.Tensor], base: NPHMConfig | None = None) -> NPHMConfig:
    """Sizes from tensor shapes (our key names); blending constants come from `base`."""
    base = base or NPHMConfig()
    member_in = state_dict["identity.members.layers.0.weight"]  # [K + 1 - P, H, 3 + G + L]
    anchor_in = state_dict["identity.anchor_mlp.0.weight"]  # [A, G]
    anchor_out = state_dict["identity.anchor_mlp.4.weight"]  # [3K, A]
    compressor = state_dict["deformation.compressor.weight"]  # [C, I + 3K]
    deformation_in = state_dict["deformation.mlp.layers.0.weight"]  # [D, 3 + C + E]
    n_anchors = anchor_out.shape[0] // 3
    global_dim = anchor_in.shape[1]
    return replace(
        base,
        n_anchors=n_anchors,
        n_symmetric_pairs=n_anchors + 1 - member_in.shape[0],
        identity_global_dim=global_dim,
        identity_local_dim=member_in.shape[2] - 3 - global_dim,
        identity_hidden_dim=member_in.shape[1],
        identity_layers=_count_layers(state_dict, "identity.members.layers.") - 1,
        anchor_mlp_dim=anchor_in.shape[0],
        expression_dim=deformation_in.shape[1] - 3 - compressor.shape[0],
        compressed_identity_dim=compressor.shape[0],
        deformation_hidden_dim=deformation_in.shape[0],
        deformation_layers=_count_layers(state_dict, "deformation.mlp.layers.") - 1,
    )


def check_state_dict(checkpoint: NPHMCheckpoint, expected: Mapping[str, torch.Tensor], config: NPHMConfig) -> None:
    """Raise NPHMCheckpointError listing missing/unexpected keys and shape mismatches, with likely causes."""
    found = checkpoint.state_dict
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"  {k}: expected {tuple(expected[k].shape)}, found {tuple(found[k].shape)}"
        for k in expected
        if k in found and found[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return

    if missing == [ANCHOR_MEAN_KEY] and not (unexpected or mismatched):
        raise NPHMCheckpointError(
            f"NPHM checkpoint {checkpoint.source} has no mean anchor layout ({ANCHOR_MEAN_KEY}); the NPHM "
            f"release keeps it outside the checkpoints: pass anchor_mean_path= (assets/anchors_39.npy)"
        )
    problems = [f"NPHM checkpoint {checkpoint.source} does not fit the model:"]
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_short_list(missing)}")
        if ANCHOR_MEAN_KEY in missing:
            problems.append(f"  ({ANCHOR_MEAN_KEY} is not in NPHM release checkpoints: pass anchor_mean_path=)")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_short_list(unexpected)}")
    if mismatched:
        problems.append("shape mismatches (parameter: expected from the config, found in the checkpoint):")
        problems.extend(mismatched)
    problems.append(_config_hint(found, config, missing + unexpected + [m.split(":")[0].strip() for m in mismatched]))
    raise NPHMCheckpointError("\n".join(problems))


def _config_hint(found: Mapping[str, torch.Tensor], config: NPHMConfig, bad_keys: list[str]) -> str:
    try:
        implied = infer_nphm_config(found, base=config)
    except (KeyError, IndexError, ValueError):
        implied = None
    if implied is not None:
        differing = [
            f"{f.name}={getattr(config, f.name)} in the config, {getattr(implied, f.name)} in the checkpoint"
            for f in fields(NPHMConfig)
            if getattr(config, f.name) != getattr(implied, f.name)
        ]
        if differing:
            return "likely config field(s) that differ: " + "; ".join(differing)
    prefixes = sorted({p for p in FIELDS_BY_PREFIX for k in bad_keys if k.startswith(p)})
    if prefixes:
        return "config fields that shape these parameters: " + "; ".join(
            f"{p.rstrip('.')}: {FIELDS_BY_PREFIX[p]}" for p in prefixes
        )
    return "the keys are not NPHM parameters: is this an NPHM checkpoint?"


def _read_single_file(path: Path) -> NPHMCheckpoint:
    raw = _load_file(path)
    stored_config = _stored_config(raw, path)
    obj = _unwrap(raw, path)
    if isinstance(obj.get("identity"), Mapping) and isinstance(obj.get("deformation"), Mapping):
        state = _part_state_dict(_unwrap(obj["identity"], path), "identity", path)
        state |= _part_state_dict(_unwrap(obj["deformation"], path), "deformation", path)
        if isinstance(obj.get("anchor_mean"), torch.Tensor):
            state[ANCHOR_MEAN_KEY] = obj["anchor_mean"]
    else:
        state = _strip_common_prefix(_tensors(obj, path), path)
        _refuse_half_of_a_release(state, path)
    return NPHMCheckpoint(state_dict=state, source=f"'{path}'", stored_config=stored_config)


def _refuse_half_of_a_release(state: Mapping[str, torch.Tensor], path: Path) -> None:
    if any(k.startswith(("identity.", "deformation.")) for k in state):
        return
    if any(k.startswith(("ensembled_deep_sdf.", "mlp_pos.")) for k in state):
        raise NPHMCheckpointError(
            f"NPHM checkpoint '{path}' is the identity model of the NPHM release alone: pass it together with "
            f"deformation_path=<expression checkpoint> and anchor_mean_path=<assets/anchors_39.npy>"
        )
    if any(k.startswith(("defDeepSDF.", "compressor.0.")) for k in state):
        raise NPHMCheckpointError(
            f"NPHM checkpoint '{path}' is the expression model of the NPHM release alone: pass it as "
            f"deformation_path= beside the identity checkpoint (and anchor_mean_path=<assets/anchors_39.npy>)"
        )


def _load_file(path: Path) -> object:
    if not path.exists():
        raise FileNotFoundError(f"NPHM checkpoint not found: '{path}'")
    if path.is_dir():
        raise NPHMCheckpointError(f"NPHM checkpoint '{path}' is a directory; expected a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NPHMCheckpointError(
            f"NPHM checkpoint '{path}' cannot be read with torch.load(weights_only=True): {first_line} "
            f"(not a torch checkpoint, or one that holds Python objects besides tensors)"
        ) from err
    except Exception as err:  # torch raises RuntimeError/EOFError/... for corrupt or foreign files
        raise NPHMCheckpointError(
            f"NPHM checkpoint '{path}' is not a readable torch checkpoint: {type(err).__name__}: {err}"
        ) from err


def _unwrap(obj: object, path: Path) -> Mapping:
    if not isinstance(obj, Mapping):
        raise NPHMCheckpointError(
            f"NPHM checkpoint '{path}' holds a {type(obj).__name__}, not a dict of parameter tensors"
        )
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            return _unwrap(obj[key], path)
    return obj


def _tensors(obj: Mapping, path: Path) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise NPHMCheckpointError(
            f"NPHM checkpoint '{path}' contains no parameter tensors "
            f"(top-level keys: {_short_list([str(k) for k in obj])})"
        )
    return tensors


def _part_state_dict(obj: Mapping, part: str, path: Path) -> dict[str, torch.Tensor]:
    """A state dict of one part (release or our key names, with or without the part prefix)."""
    state = {}
    for key, value in _tensors(obj, path).items():
        key = key.removeprefix(f"{part}.")
        for pattern, replacement in RELEASE_KEY_RENAMES[part]:
            key = re.sub(pattern, replacement, key)
        state[f"{part}.{key}"] = value
    return state


def _strip_common_prefix(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Accept our keys under one wrapper prefix ("model.", "module.", a Lightning attribute)."""
    prefixes = {m.group(1) for k in state if (m := re.match(r"^(.*?)(?:identity|deformation)\.", k))}
    if len(prefixes) > 1:
        raise NPHMCheckpointError(
            f"NPHM checkpoint '{path}' holds NPHM-like keys under several prefixes ({sorted(prefixes)}); "
            f"save one model's state_dict"
        )
    if not prefixes or prefixes == {""}:
        return state
    (prefix,) = prefixes
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _stored_config(raw: object, path: Path) -> NPHMConfig | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("nphm_config"), Mapping):
        return None
    try:
        return NPHMConfig(**raw["nphm_config"])
    except (TypeError, ValueError) as err:
        raise NPHMCheckpointError(f"NPHM checkpoint '{path}' has an invalid nphm_config: {err}") from err


def _read_anchor_mean(path: Path) -> torch.Tensor:
    if not path.exists():
        raise FileNotFoundError(f"NPHM mean anchor file not found: '{path}'")
    try:
        anchors = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise NPHMCheckpointError(f"NPHM mean anchor file '{path}' is not a readable .npy array: {err}") from err
    anchors = np.asarray(anchors, dtype=np.float32)
    while anchors.ndim > 2 and anchors.shape[0] == 1:  # the release keeps it as [1, 1, K, 3] in memory
        anchors = anchors[0]
    if anchors.ndim != 2 or anchors.shape[1] != 3:
        raise NPHMCheckpointError(f"NPHM mean anchor file '{path}' must hold a [K, 3] array, found {anchors.shape}")
    return torch.from_numpy(anchors.copy())


def _count_layers(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.weight$", k))}
    if not indices:
        raise KeyError(f"{prefix}<i>.weight")
    return max(indices) + 1


def _short_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
