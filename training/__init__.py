"""dermedge training: self-supervised pre-training of small timm encoders and frozen evaluation.

Needs the ``train`` extra (torch, torchvision, timm, scikit-learn, safetensors, pyyaml).
"""
