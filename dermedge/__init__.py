"""dermedge: offline dermatology image embeddings and classification, without torch.

Example:
    >>> import dermedge
    >>> with dermedge.load_model() as model:          # the built-in default bundle
    ...     preds = model.classify(["lesion.jpg"], top_k=3)
    ...     emb = model.embed(["lesion.jpg"])          # (1, D) float32
"""

from dermedge.backends import available_backends as available_backends
from dermedge.bundle import Manifest as Manifest
from dermedge.bundle import open_bundle as open_bundle
from dermedge.bundle_writer import ArtifactSource as ArtifactSource
from dermedge.bundle_writer import write_bundle as write_bundle
from dermedge.errors import BackendError as BackendError
from dermedge.errors import BackendUnavailableError as BackendUnavailableError
from dermedge.errors import BatchInputError as BatchInputError
from dermedge.errors import BundleError as BundleError
from dermedge.errors import DermedgeError as DermedgeError
from dermedge.errors import ExportError as ExportError
from dermedge.errors import InputError as InputError
from dermedge.errors import QuantizationError as QuantizationError
from dermedge.heads import LinearHead as LinearHead
from dermedge.heads import fit_linear_head as fit_linear_head
from dermedge.loading import default_bundle_path as default_bundle_path
from dermedge.loading import load_model as load_model
from dermedge.model import Model as Model
from dermedge.preprocess import prepare as prepare
from dermedge.preprocess import read_image as read_image
from dermedge.results import Prediction as Prediction
from dermedge.results import Result as Result

__version__ = "0.1.0"
