"""dermedge.training: self-supervised pre-training of small timm encoders, fine-tuning and frozen evaluation.

Installed as ``dermedge.training`` (the repository keeps it in ``training/``). Needs the ``train`` extra
(torch, torchvision, timm, scikit-learn, safetensors, pyyaml); without it, importing this package raises
``MissingExtraError`` naming ``pip install 'dermedge[train]'``. The runtime (``import dermedge``) never imports it.
"""

from dermedge.errors import require_extra

require_extra("dermedge.training", "train", "torch", "timm", "safetensors", "yaml")
