"""Weights in and out of other frameworks: one format per file over one shared table of names.

Formats (see `convert.FORMATS`): Hugging Face (`hf`), OpenAI's TensorFlow release (`openai_tf`),
llm.c (`llmc`), GGUF for llama.cpp (`gguf_format`), ONNX (`onnx_graph`), TensorFlow SavedModel
(`savedmodel`) and a flat safetensors file (`flat_safetensors`). `names` holds the table of
parameter names and layouts they share, `vocab` the tokenizer that travels with the weights,
`output` the write-to-a-temporary-name-then-rename rule, `convert` the checkpoint-level commands.
Heavy dependencies (TensorFlow, onnx, gguf) are imported only by the format that needs them.

References:
  See each format's module.
"""

from gpt2_jax.export.convert import FORMATS, IMPORT_FORMATS, export_checkpoint, import_model, read_model
from gpt2_jax.export.hf import (hf_config_dict, hf_state_to_params, load_hf_dir, model_config_from_hf,
                                params_to_hf_state, save_hf_dir)
from gpt2_jax.export.names import ExportError

__all__ = [
    "ExportError", "FORMATS", "IMPORT_FORMATS", "export_checkpoint", "import_model", "read_model", "load_hf_dir",
    "save_hf_dir", "hf_config_dict", "model_config_from_hf", "params_to_hf_state", "hf_state_to_params",
]
