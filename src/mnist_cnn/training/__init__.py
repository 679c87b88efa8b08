"""Training: from a configuration to a finished run folder.

Owns the training configuration (:mod:`~mnist_cnn.training.config`, saved in full with every run)
and the named recipes, batch augmentation as tensor ops, the engine (:mod:`~mnist_cnn.training.engine`:
``train()``; data resident on the device in :mod:`~mnist_cnn.training.device_data`, the optimiser step
in :mod:`~mnist_cnn.training.steps`, the epoch loop in :mod:`~mnist_cnn.training.loop`, the run's
final evaluation and files in :mod:`~mnist_cnn.training.outputs`, checkpoint and resume through a
typed state object in :mod:`~mnist_cnn.training.state`), devices, threads and precision
(:mod:`~mnist_cnn.training.device`, with :mod:`mnist_cnn.cpu`), multi-process training, and training
several runs (an ensemble's members, a comparison's missing runs). A new recipe is one entry in
:mod:`mnist_cnn.training.recipes`. Depends on inference (to build ensembles), reports (each run's
report), evaluation, models, data and artifacts.
"""
