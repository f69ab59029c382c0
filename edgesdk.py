"""Import this source checkout as the package `edgesdk` (development only; wheels do not ship it).

The wheels map the repository's folders into one namespace (pyproject.toml, runtime/pyproject.toml):
sdk/ is `edgesdk`, runtime/ `edgesdk.runtime`, models/ `edgesdk.models`, converters/
`edgesdk.converters`. A checkout on sys.path (the tests, `PYTHONPATH=CHECKOUT`, `make venv`'s
editable install) gets the same names from this module: it runs sdk/__init__.py as the package
`edgesdk` and searches sdk/ and then the checkout's root for its submodules.
"""

import os as _os

_ROOT = _os.path.dirname(_os.path.abspath(__file__))
__path__ = [_os.path.join(_ROOT, "sdk"), _ROOT]  # edgesdk.cli -> sdk/cli.py; edgesdk.runtime -> runtime/
__package__ = __name__
__file__ = _os.path.join(_ROOT, "sdk", "__init__.py")
if __spec__ is not None:
    __spec__.submodule_search_locations = __path__
with open(__file__, encoding="utf-8") as _f:
    _code = compile(_f.read(), __file__, "exec")
del _os, _ROOT, _f
exec(_code)
del _code
