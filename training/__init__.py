"""Training side of ram-infer: the PyTorch Recurrent Attention Model, its data sets, training loop and ONNX export.

Installed name: this folder (``training/`` in the repository) installs as ``ram_infer.training`` (pyproject.toml,
``wheel.packages``), because a top-level package named ``training`` in site-packages would clash with other
projects'. (scikit-build-core can nest a folder in the wheel but not rename it, so the name keeps "training".) Import
it as ``ram_infer.training`` (``from ram_infer.training.config import TrainConfig``); inside the folder, modules
import each other relatively. It needs the ``[train]`` extra (torch); ``import ram_infer`` never imports it. The
command line is ``ram-train`` (``ram_infer.training.cli``); ``python -m ram_infer.training`` and
``torchrun … -m ram_infer.training`` run the same.
"""
