"""Ringan: a small, fast, long-context language model for curated Indonesian dialogue, on the HF stack."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .base_model import base_model_path
from .modeling import RinganCache, RinganConfig, RinganForCausalLM, RinganModel, RinganPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register("ringan", RinganConfig, exist_ok=True)
AutoModel.register(RinganConfig, RinganModel, exist_ok=True)
AutoModelForCausalLM.register(RinganConfig, RinganForCausalLM, exist_ok=True)
# save_pretrained() then copies the modeling files beside the weights and writes `auto_map`, so a
# checkpoint also loads with trust_remote_code=True where this package is not installed.
RinganConfig.register_for_auto_class()
RinganModel.register_for_auto_class("AutoModel")
RinganForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "RinganCache",
    "RinganConfig",
    "RinganForCausalLM",
    "RinganModel",
    "RinganPreTrainedModel",
    "__version__",
    "base_model_path",
]
