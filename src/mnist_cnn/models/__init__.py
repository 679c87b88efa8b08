"""Models: the architecture registry and model files.

Owns :func:`~mnist_cnn.models.registry.create_model` over a registry of architectures (timm style:
one decorated function per model, all points of the :class:`~mnist_cnn.models.convnet.ConvNet`
family), and model files (:mod:`~mnist_cnn.models.files`): safetensors weights whose metadata
names the architecture, its arguments, the normalisation and the classes, so any later command
rebuilds the model from the file alone. A new model is one registered function in
:mod:`mnist_cnn.models.registry`. Depends on :mod:`mnist_cnn.artifacts` and :mod:`mnist_cnn.errors`.
"""
