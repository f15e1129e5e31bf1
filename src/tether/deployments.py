"""Deployment identity: which version of the code a process serves."""

from __future__ import annotations

import os

DEFAULT_DEPLOYMENT_ID = "default"
DEFAULT_ENVIRONMENT = "default"


def current_deployment_id() -> str:
    """This process's deployment: ``$TETHER_DEPLOYMENT_ID``, else ``default``."""
    return os.environ.get("TETHER_DEPLOYMENT_ID") or DEFAULT_DEPLOYMENT_ID


def current_environment() -> str:
    """This process's environment: ``$TETHER_ENVIRONMENT``, else ``default``."""
    return os.environ.get("TETHER_ENVIRONMENT") or DEFAULT_ENVIRONMENT
