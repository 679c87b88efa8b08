"""Serving: the REST API and the drawing web app (FastAPI), over any predictor.

Owns request limits, decoding untrusted uploads, micro-batching requests, the OpenAPI schema and
the static page. Depends on inference and below; it must never reach training (an import-linter
contract says so), so a served ONNX model needs no trainer and no torch.

Its rooms, each importing only from the ones below it (an import-linter contract says so too):
``server`` (what `mnist-cnn serve` runs), ``app`` (the FastAPI app and its routes), ``decoding``
(request bodies: multipart, JSON, raw), ``service`` (the model and the request -> answer logic),
then ``batcher``, ``images`` (bounded decoding of untrusted images), ``guards`` (security headers,
the guarded HTTP protocol) and ``schemas`` (the OpenAPI models), and ``limits`` at the bottom.
"""
