"""Adapter tensors <-> Flower ArrayRecord, and the rule of what may leave a client.

Only the LoRA matrices, the user head, the item bias and (if the model has them) the item ID rows and the
sequence residual are ever sent, and once per training, in round 0, the trending list's DP vote totals
(`trending`, shared/trending.py). The rule is a name pattern checked on both sides: the client refuses to
send anything else, the server refuses to aggregate anything else (and each round expects its own names
and shapes: adapters in training rounds, `trending` alone in round 0).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

ADAPTER_NAMES = "adapter-names"  # legacy FitIns config key: the order of the unnamed parameter list
WEIGHT = "unit-weight"  # reply metric weighing a client in the mean (1: equal weights)
SHAREABLE = re.compile(
    r"(\.lora_[AB]\.default\.weight|^user_head\.[01]\.weight|^item_(bias|ids)\.weight"
    r"|^sequence\.(adaptor|adaptor_norm|position|out_norm|out"
    r"|blocks\.\d+\.(attention_norm|qkv|proj|mlp_norm|mlp\.[02]))\.(weight|bias)|^trending)$"
)


class AdapterLeakError(ValueError):
    """A tensor that is not an adapter was about to leave, or arrived."""


def check_names(names) -> None:
    bad = sorted(n for n in names if not SHAREABLE.search(n))
    if bad:
        raise AdapterLeakError(f"{len(bad)} tensor(s) are not shareable adapters, e.g. {bad[:3]}")


def to_record(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """The trainable state as an ArrayRecord, after checking that every tensor is an adapter."""
    check_names(state)
    return ArrayRecord({k: v.detach().cpu() for k, v in state.items()})


def from_record(
    record: ArrayRecord, expected: dict[str, tuple[int, ...]] | None = None
) -> dict[str, torch.Tensor]:
    """Tensors from an ArrayRecord; with `expected`, names and shapes must match it exactly."""
    check_names(record.keys())
    state = {k: torch.from_numpy(np.array(v.numpy(), dtype=np.float32)) for k, v in record.items()}
    if expected is not None:
        if set(state) != set(expected):
            raise AdapterLeakError(
                f"adapter names differ: missing {sorted(set(expected) - set(state))[:3]}, "
                f"unexpected {sorted(set(state) - set(expected))[:3]}"
            )
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[name]):
                raise AdapterLeakError(f"{name}: shape {tuple(tensor.shape)} != {tuple(expected[name])}")
    return state


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def record_from_list(arrays: list[np.ndarray], names: list[str]) -> ArrayRecord:
    """An ArrayRecord from an unnamed list (Flower's legacy Parameters), named in the sender's order."""
    if len(arrays) != len(names):
        raise AdapterLeakError(f"{len(arrays)} arrays for {len(names)} adapter names")
    check_names(names)
    return ArrayRecord({name: Array(np.asarray(a)) for name, a in zip(names, arrays, strict=True)})
