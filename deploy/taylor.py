"""First-order Taylor importance of every prunable conv's output channels (Molchanov et al.,
"Pruning Convolutional Neural Networks for Resource Efficient Inference", ICLR 2017): removing
channel c of a feature map a changes the loss by about |a_c * dL/da_c|; per image the
spatial mean of that product, averaged over a few training batches. The `taylor` criterion
of deploy.pruning sums it over a channel group's producing convs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from icnet.config import ICNetConfig
from icnet.data import Source, train_dataset
from icnet.losses import cascade_loss
from icnet.model import build_icnet
from icnet.training import load_initial_weights
from icnet.weights import WeightDict


def taylor_scores(config: ICNetConfig, weights: WeightDict, source: Source,
                  crop_size: tuple[int, int], batch_size: int = 4, batches: int = 4,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """conv name -> per-channel Taylor scores of its output, for every conv of the plan.

    The BN model (the training variant; a BN-merged model gets identity BNs) runs in
    inference mode on `batches` training batches of `batch_size` crops; the loss is the
    training's cascade loss.
    """
    bn_config = config.replace(batch_norm=True)
    model = build_icnet(bn_config, crop_size)
    load_initial_weights(model, bn_config, weights, "the model to rank")
    names = list(config.plan)
    probe = tf_keras.Model(model.inputs, {"outputs": model.output,
                                          "features": {n: model.get_layer(n).output
                                                       for n in names}})
    totals = {name: np.zeros(config.plan[name], np.float64) for name in names}
    count = 0
    data = train_dataset(source, crop_size, batch_size, random_scale=False,
                         random_mirror=False, seed=seed)
    for images, labels in data.take(batches):
        with tf.GradientTape() as tape:
            result = probe(images, training=False)
            loss, _ = cascade_loss(result["outputs"], labels, config.num_classes)
        features = result["features"]
        gradients = tape.gradient(loss, [features[name] for name in names])
        for name, gradient in zip(names, gradients):
            product = tf.reduce_mean(features[name] * gradient, axis=(1, 2))  # [B, C]
            totals[name] += tf.reduce_sum(tf.abs(product), axis=0).numpy()
        count += int(images.shape[0])
    logging.info("taylor scores of %d convs on %d training crops", len(names), count)
    return {name: total / max(count, 1) for name, total in totals.items()}
