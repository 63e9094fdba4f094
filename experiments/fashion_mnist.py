"""python -m research.train --config=experiments/fashion_mnist.py:one_class

Fashion-MNIST. Variants (``fashion_mnist.py:<variant>``; none = dense):

* ``dense``: the seed, a dense AE 784->64->784 (sigmoid output) on all 60,000 training images,
  validated on the test set, test images flagged above mean + 2·std of the test errors.
* ``one_class``: the one-class benchmark (runner ``one_class``): one model per class, trained on that
  class's 6,000 training images, ROC-AUC of the class against the other nine on the 10,000 test
  images; the seed's 784->64->784 AE, all ten models one vmapped program.
* ``one_class_conv2d``: the same with a small 2-D convolutional AE.
"""

from research.config import base_config, variant

VARIANTS = ("dense", "one_class", "one_class_conv2d")


def get_config(arg=None):
    arg = variant(arg, VARIANTS)
    c = base_config("fashion_mnist", "conv2d" if arg == "one_class_conv2d" else "dense")
    c.data.scaling = "none"  # the loader already scales pixels to [0, 1]
    c.model.activation = "relu"
    c.model.output_activation = "sigmoid"
    c.train.epochs = 10
    c.train.learning_rate = 1e-3
    c.train.use_best = False  # the seed scores with the weights after the last epoch
    c.train.checkpoint_every = 0
    if arg in ("dense", "one_class"):
        c.model.hidden = ()
        c.model.latent_dim = 64
        c.train.batch_size = 256
    if arg == "dense":
        c.experiment = "fashion_mnist_dense"
        c.data.normal_classes = None  # every class is "normal"; which test images are anomalies is unknown
        c.data.val_on_test = True  # the seed's validation_data=(x_test, x_test)
        c.train.loss = "mse"
        c.threshold.method = "mean_std"
        c.threshold.k = 2.0
        c.threshold.fit_on = "test"
        c.plots.n_examples = 10
        c.analyses = ("image_examples",)
        return c
    c.runner = "one_class"
    c.experiment = "fashion_mnist_one_class_" + ("dense" if arg == "one_class" else "conv2d")
    c.data.classes = tuple(range(10))
    c.data.val_fraction = 0.0  # train on all 6,000 images of the class ...
    c.data.val_rows = 500  # ... and monitor the loss on 500 of them (nothing is selected on it)
    c.plots.n_examples = 6
    c.score.normalize = "tv"  # error / the image's total variation: dense mean AUC 0.928 -> 0.933
    if arg == "one_class_conv2d":
        c.model.features = (8, 16)  # (32, 64): ~10x the CPU time per step, too slow for 2 shared cores
        c.model.kernel_size = 3
        c.model.stride = 2
        c.model.latent_dim = 8  # hard-class sweep (T-shirt, pullover, sandal, shirt, bag): 8 > 16 > 32 ~ 64
        c.train.batch_size = 128
        # the ten models one after another in the compiled epoch: on 2 CPU cores 95 s of training against
        # 141 s for all ten in one vmap, AUCs equal to 0.001; set 0 on a GPU
        c.train.member_chunk = 1
    return c
