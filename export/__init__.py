"""dermedge.export: checkpoints -> ONNX / OpenVINO IR / TensorRT, INT8 quantisation with an accuracy gate,
distillation, the app pipeline graph, and bundle writing (through ``dermedge.bundle_writer``).

Installed as ``dermedge.export`` (the repository keeps it in ``export/``). Needs the ``export`` extra (onnx);
exporting a trained encoder also needs ``train`` (torch). Without onnx, importing this package raises
``MissingExtraError`` naming ``pip install 'dermedge[export]'``.
"""

from dermedge.errors import require_extra

require_extra("dermedge.export", "export", "onnx")
