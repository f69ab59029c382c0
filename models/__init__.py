"""Model families and the registry: `models.create(name, **cfg)`, `models.list()`.

Plain PyTorch; imports nothing else of the SDK.
"""

from edgesdk.models.registry import create, list_models as list, register_model  # noqa: A001

from edgesdk.models import mlp  # noqa: E402,F401  (registers its models)
from edgesdk.models import teachers  # noqa: E402,F401  (registers "decoder")
from edgesdk.models import encdec  # noqa: E402,F401  (registers "encdec")
from edgesdk.models import mamba  # noqa: E402,F401  (registers "mamba")
from edgesdk.models import gqa_decoder  # noqa: E402,F401  (registers "gqa-decoder", the encdec baseline)

__all__ = ["create", "list", "register_model"]
