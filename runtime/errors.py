"""Typed errors shared by every layer (re-exported as ``edgesdk.errors``).

Every message says what was received, what was expected, and how to fix it.
"""

from __future__ import annotations


class SdkError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ConfigError(SdkError, ValueError):
    """An argument or configuration value is invalid (unknown target, bad option)."""


class InputError(SdkError, ValueError):
    """Inputs do not match the model's spec (count, name, shape, dtype, value range, NaN)."""


class IntegrityError(SdkError):
    """A payload file differs from its manifest (hash, size), is truncated or is corrupt."""


class ConversionError(SdkError):
    """Export or lowering to a target failed."""


class ToleranceError(SdkError):
    """A converted model's outputs differ from the PyTorch reference beyond tolerance."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


class ExecutionError(SdkError):
    """The backend failed while running a model that loaded and passed input validation."""


class TargetUnavailableError(SdkError):
    """A target cannot run (or convert) on this machine; the message says why and the fix."""


class UnsupportedModelError(ConversionError):
    """A target cannot take this model (an op or input kind it does not offer); the message names
    what it lacks and the targets to try instead. Raised before anything is exported."""
