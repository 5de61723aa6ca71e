"""Typed configs (dataclasses) loaded from YAML with dotted ``key=value`` overrides."""

from speechllm.config.loader import (
    apply_overrides,
    check_config,
    dump_yaml,
    from_dict,
    iter_config_fields,
    iter_field_help,
    load_config,
    range_arg,
    save_resolved_config,
    to_dict,
)
from speechllm.config.schema import (
    DataConfig,
    GenerationConfig,
    LoraConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "GenerationConfig",
    "LoraConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_config",
    "dump_yaml",
    "from_dict",
    "iter_config_fields",
    "iter_field_help",
    "load_config",
    "range_arg",
    "save_resolved_config",
    "to_dict",
]
