"""Tasks for the shared training loop (``mambadiff.train.Trainer``): each owns its data, loss and evaluation."""
