"""ONNX interchange: a netspec net and its weights to an ONNX model (``export``), and an ONNX
model to a netspec net and weights (``importer``), with a parity check against ONNX Runtime.

Both need the ``[onnx]`` extra; ``require`` says so in one located paragraph when it is missing.
"""

from __future__ import annotations

from netspec.errors import NetspecError

DEFAULT_OPSET = 17
MIN_OPSET = 13        # Softmax over one axis, Split/ReduceSum sizes as inputs: the semantics used here
MAX_OPSET = 21        # the newest onnx 1.20 and onnxruntime 1.32 both run fully


def require(module: str = "onnx", why: str = "ONNX export and import"):
    """Import ``onnx`` or ``onnxruntime``, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise NetspecError(f"{why} needs the '{module}' package, which is not installed; install the "
                           f"extra with: pip install -e \".[onnx]\" (or pip install netspec[onnx])") from None
