"""The SDK's typed errors (defined in `runtime.errors`, so an app shipping only `runtime` has them)."""

from edgesdk.runtime.errors import (  # noqa: F401
    ConfigError, ConversionError, ExecutionError, InputError, IntegrityError, SdkError,
    TargetUnavailableError, ToleranceError, UnsupportedModelError,
)
