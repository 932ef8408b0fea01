"""What the training tests share: the tiny network and batch every run of theirs uses."""

TINY = {"model_kwargs.width": 4, "model_kwargs.blocks": 1, "batch_size": 64, "val_per_class": 5}
