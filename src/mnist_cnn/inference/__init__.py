"""Inference: from a saved model and a user's image to an answer.

Owns turning photos, scans and drawings into MNIST-like 28x28 images
(:mod:`~mnist_cnn.inference.preprocessing`), predictors over the three kinds of saved model
(PyTorch model file or run folder, ensemble folder, ONNX file: :mod:`~mnist_cnn.inference.predictors`),
ensembles (:mod:`~mnist_cnn.inference.ensemble`), ``evaluate`` on a data split, ``predict`` on files
(:mod:`~mnist_cnn.inference.batch`) and ONNX export (:mod:`~mnist_cnn.inference.export`; the runtime
side, :mod:`~mnist_cnn.inference.onnx`, never imports torch). It loads models; it never trains them.
"""
