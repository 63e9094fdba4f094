"""Fashion-MNIST one-class benchmark (``python -m research.one_class``): one model per class,
trained on that class's 6,000 training images, ROC-AUC of the class against the other nine on the
10,000 test images. Variants: ``--config=experiments/fashion_mnist_one_class.py:dense`` (default,
the seed's 784->64->784 AE) and ``...py:conv2d`` (2-D convolutional AE)."""

from research.config import base_config


def get_config(variant: str = "dense"):
    c = base_config()
    c.experiment = f"fashion_mnist_one_class_{variant}"
    c.data.name = "fashion_mnist"
    c.data.classes = tuple(range(10))
    c.data.val_fraction = 0.0  # train on all 6,000 images of the class ...
    c.data.val_rows = 500  # ... and monitor the loss on 500 of them (nothing is selected on it)
    c.data.scaling = "none"
    c.train.use_best = False
    c.train.checkpoint_every = 0
    c.train.learning_rate = 1e-3
    c.plots.n_examples = 6
    c.score.normalize = "tv"  # error / the image's total variation: dense mean AUC 0.928 -> 0.933
    if variant == "dense":
        c.model.name = "dense"
        c.model.hidden = ()
        c.model.latent_dim = 64
        c.model.activation = "relu"
        c.model.output_activation = "sigmoid"
        c.train.epochs = 10
        c.train.batch_size = 256
    elif variant == "conv2d":
        c.model.name = "conv2d"
        c.model.features = (8, 16)  # (32, 64): ~10x the CPU time per step, too slow for 2 shared cores
        c.model.kernel_size = 3
        c.model.stride = 2
        c.model.latent_dim = 8  # hard-class sweep (T-shirt, pullover, sandal, shirt, bag): 8 > 16 > 32 ~ 64
        c.model.activation = "relu"
        c.model.output_activation = "sigmoid"
        c.train.epochs = 10
        c.train.batch_size = 128
        # the ten models one after another in the compiled epoch: on 2 CPU cores 95 s of training against
        # 141 s for all ten in one vmap, AUCs equal to 0.001; set 0 on a GPU
        c.train.member_chunk = 1
    else:
        raise ValueError(f"unknown variant {variant!r} (dense, conv2d)")
    return c
