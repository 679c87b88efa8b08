"""Evaluation: numbers from predictions.

Owns batched inference of a torch model on uint8 images (with optional test-time augmentation),
loss, accuracy, per-class precision/recall/F1 and the confusion matrix
(:mod:`~mnist_cnn.evaluation.metrics`), and the statistics that compare models over seeds and
images (:mod:`~mnist_cnn.evaluation.stats`: t intervals, McNemar's test). It knows nothing about
files or data folders: callers pass arrays and models. Depends only on :mod:`mnist_cnn.errors`.
"""
