"""ram-infer: the Recurrent Attention Model (Mnih et al. 2014) run without PyTorch."""

from ram_infer.sensor import extract_glimpses

__version__ = "0.1.0"
__all__ = ["extract_glimpses", "__version__"]
