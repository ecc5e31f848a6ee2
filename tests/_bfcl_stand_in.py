"""bfcl-eval's own AST checker, importable without its model handlers (tests/test_bfcl_agreement.py).

`bfcl_eval/eval_checker/ast_eval/ast_checker.py` imports `bfcl_eval.constants.model_config`, which imports every
model handler bfcl-eval ships (openai, anthropic, vertexai, ...: dependencies we do not install; bfcl-eval is
installed with --no-deps for its data). The checker reads one thing from it: MODEL_CONFIG_MAPPING[model].
underscore_to_dot, which only renames dotted function names for models whose APIs refuse dots. The stand-in
answers False for every model, as bfcl-eval's own config does for Llama 3.1 (the call format ours follows).

The stand-in module sits in sys.modules only while ast_checker is imported; the checker's code runs unchanged.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass

MODEL_CONFIG = "bfcl_eval.constants.model_config"
AST_CHECKER = "bfcl_eval.eval_checker.ast_eval.ast_checker"


@dataclass(frozen=True)
class ModelConfig:
    underscore_to_dot: bool = False


class _EveryModel(dict):
    def __missing__(self, model_name: str) -> ModelConfig:
        return ModelConfig()


def ast_checker_module() -> types.ModuleType:
    """bfcl_eval.eval_checker.ast_eval.ast_checker, imported with the stand-in model config."""
    if AST_CHECKER in sys.modules:
        return sys.modules[AST_CHECKER]
    stand_in = types.ModuleType(MODEL_CONFIG)
    stand_in.ModelConfig = ModelConfig
    stand_in.MODEL_CONFIG_MAPPING = _EveryModel()
    before = sys.modules.get(MODEL_CONFIG)
    sys.modules[MODEL_CONFIG] = stand_in
    try:
        return importlib.import_module(AST_CHECKER)
    finally:
        if before is None:
            del sys.modules[MODEL_CONFIG]
        else:
            sys.modules[MODEL_CONFIG] = before
