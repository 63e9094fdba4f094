"""Fashion-MNIST seed: dense AE 784->64->784 (sigmoid output) on all 60,000 training images,
validated on the test set, test images flagged above mean + 2·std of the test errors."""

from research.config import base_config


def get_config():
    c = base_config()
    c.experiment = "fashion_mnist_dense"
    c.data.name = "fashion_mnist"
    c.data.normal_classes = None  # every class is "normal"; which test images are anomalies is unknown
    c.data.val_on_test = True  # the seed's validation_data=(x_test, x_test)
    c.data.scaling = "none"  # the loader already scales pixels to [0, 1]
    c.model.name = "dense"
    c.model.hidden = ()
    c.model.latent_dim = 64
    c.model.activation = "relu"
    c.model.output_activation = "sigmoid"
    c.train.epochs = 10
    c.train.batch_size = 256
    c.train.learning_rate = 1e-3
    c.train.loss = "mse"
    c.train.use_best = False  # the seed scores with the weights after the last epoch
    c.train.checkpoint_every = 0
    c.threshold.method = "mean_std"
    c.threshold.k = 2.0
    c.threshold.fit_on = "test"
    c.plots.n_examples = 10
    c.analyses = ("image_examples",)
    return c
