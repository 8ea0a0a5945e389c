"""Layers and parameter surgery: momentum encoders and queues, gradient reversal, CDAN's multilinear map,
residual adapters, LoRA."""

from lightning_tl.nn.adapter_merge import adapter_state_dict, load_adapter_state_dict, merge_adapters
from lightning_tl.nn.adapters import AdaptedConv, ParallelAdapter, SeriesAdapter, find_blocks, inject_adapters
from lightning_tl.nn.convnet import SmallConvNet
from lightning_tl.nn.domains import (
    DomainBatchNorm2d,
    DomainHeads,
    domain_parameter_count,
    get_domain,
    model_domains,
    set_domain,
)
from lightning_tl.nn.grl import GradientReversal, dann_coeff, grad_reverse
from lightning_tl.nn.lora import (
    LoRAConv2d,
    LoRALinear,
    inject_lora,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)
from lightning_tl.nn.momentum import MemoryQueue, cosine_momentum, update_momentum
from lightning_tl.nn.multilinear import MultilinearMap, multilinear_map
from lightning_tl.nn.shuffle_bn import shuffle_permutation, shuffled_forward

__all__ = [
    "AdaptedConv",
    "DomainBatchNorm2d",
    "DomainHeads",
    "GradientReversal",
    "LoRAConv2d",
    "LoRALinear",
    "MemoryQueue",
    "MultilinearMap",
    "ParallelAdapter",
    "SeriesAdapter",
    "SmallConvNet",
    "adapter_state_dict",
    "cosine_momentum",
    "dann_coeff",
    "domain_parameter_count",
    "find_blocks",
    "get_domain",
    "grad_reverse",
    "inject_adapters",
    "inject_lora",
    "load_adapter_state_dict",
    "lora_state_dict",
    "merge_adapters",
    "merge_lora",
    "model_domains",
    "multilinear_map",
    "set_domain",
    "shuffle_permutation",
    "shuffled_forward",
    "unmerge_lora",
    "update_momentum",
]
