"""ram-infer: the Recurrent Attention Model (Mnih et al. 2014) run without PyTorch.

The engine names (``load_model``, ``Engine``, ``Prediction``) load onnxruntime, and ``extract_glimpses`` numpy and
the compiled sensor, on first use: ``import ram_infer`` and ``ram-infer --version`` load neither.
"""

from ram_infer.metadata import ModelFormatError

__version__ = "0.1.0"
__all__ = ["extract_glimpses", "load_model", "Engine", "Prediction", "ModelFormatError", "__version__"]
_ENGINE_NAMES = ("load_model", "Engine", "Prediction")


def __getattr__(name: str):
    if name in _ENGINE_NAMES:
        from ram_infer import engine

        return getattr(engine, name)
    if name == "extract_glimpses":
        from ram_infer.sensor import extract_glimpses

        return extract_glimpses
    raise AttributeError(f"module 'ram_infer' has no attribute {name!r}")
