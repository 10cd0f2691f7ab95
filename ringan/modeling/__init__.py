"""The Ringan model: config, modeling and attention kernels (these files ship with every checkpoint)."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_ringan import RinganConfig
from .modeling_ringan import RinganCache, RinganForCausalLM, RinganModel, RinganPreTrainedModel

AutoConfig.register("ringan", RinganConfig, exist_ok=True)
AutoModel.register(RinganConfig, RinganModel, exist_ok=True)
AutoModelForCausalLM.register(RinganConfig, RinganForCausalLM, exist_ok=True)
# save_pretrained() then copies the modeling files beside the weights and writes `auto_map`, so a
# checkpoint also loads with trust_remote_code=True where this package is not installed.
RinganConfig.register_for_auto_class()
RinganModel.register_for_auto_class("AutoModel")
RinganForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["RinganCache", "RinganConfig", "RinganForCausalLM", "RinganModel", "RinganPreTrainedModel"]
