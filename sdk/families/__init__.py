"""Student families for `edgesdk.pipeline`: how each family distils its students, and how their
quality is measured, behind one small interface (`edgesdk.families.base`). One file per family
(`mlp`, `encdec`, `mamba`), each registering itself on import; a new family is one new file here
plus its import line below, or a module of your own that calls `register_family`.

Example::

    from edgesdk.families import get_family, list_families
    list_families()                      # ['encdec', 'mamba', 'mlp']
    get_family("mlp").description
"""

from edgesdk.families.base import (  # noqa: F401  (the public names, as before the split)
    DEFAULT_CACHE_DIR, FAMILIES, ROOT, Family, FamilyContext, FamilyResult, Runner, TrainingCache, accuracy,
    code_version, family_options, fingerprint, get_family, list_families, register_family, torch_threads,
)
from edgesdk.families import encdec, mamba, mlp  # noqa: E402,F401  (each registers its family)
