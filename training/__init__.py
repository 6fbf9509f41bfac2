"""Training side of ram-infer: the PyTorch Recurrent Attention Model, its data sets, training loop and ONNX export."""
