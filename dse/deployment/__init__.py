"""Deploying a candidate: its arithmetic written into an ONNX graph, run and timed on ONNX Runtime.

- :mod:`.layer_arithmetic`: per layer, what the graph stores and rounds (the emulation's own numbers).
- :mod:`.onnx_graph`: the float32 export, and a candidate's QDQ graph made from it.
- :mod:`.runtime`: ONNX Runtime sessions, accuracy, interleaved latency against float32.
- :mod:`.bundle`: the manifest (with its JSON schema) and the bundle directory ``python -m dse.export`` writes.
"""
