"""Serving: the REST API and the drawing web app (FastAPI), over any predictor.

Owns request limits, decoding untrusted uploads, micro-batching requests, the OpenAPI schema and
the static page. Depends on inference and below; it must never reach training (an import-linter
contract says so), so a served ONNX model needs no trainer and no torch.
"""
