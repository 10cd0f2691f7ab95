"""The Ringan model: config, modeling and attention kernels (these files ship with every checkpoint)."""

from .configuration_ringan import RinganConfig
from .modeling_ringan import RinganCache, RinganForCausalLM, RinganModel, RinganPreTrainedModel

__all__ = ["RinganCache", "RinganConfig", "RinganForCausalLM", "RinganModel", "RinganPreTrainedModel"]
