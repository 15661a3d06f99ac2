"""dermedge export: checkpoints -> ONNX / OpenVINO IR / TensorRT, INT8 quantisation with an accuracy gate,
distillation, and bundle writing (through ``dermedge.bundle_writer``). Needs the ``train`` and ``export`` extras.
"""
