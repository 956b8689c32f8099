"""Column roles, registered by name: importing this package registers every built-in role.

The import order below is the order roles are listed in messages (``columns.ROLES``/``OVERRIDABLE``);
the order inference asks them in is each role's ``inference_rank``.
"""

# Importing a role module registers it, so this order is the listing order: keep it unsorted.
# isort: off
from . import continuous, positive, bounded, integer, categorical, datetime, constant, ignore  # noqa: F401

# isort: on
from .base import (
    MAX_INTEGER_LEVELS,
    ROLE_REGISTRY,
    SET_IN_CONFIG,
    Encoded,
    Evidence,
    FeatureSpec,
    Role,
    Times,
    Transform,
    inference_order,
    overridable_roles,
    parse_numbers,
    register_role,
)
from .ignore import ID_LIKE_MIN
from .written import read_values, unusable

__all__ = [
    "ID_LIKE_MIN",
    "MAX_INTEGER_LEVELS",
    "ROLE_REGISTRY",
    "SET_IN_CONFIG",
    "Encoded",
    "Evidence",
    "FeatureSpec",
    "Role",
    "Times",
    "Transform",
    "inference_order",
    "overridable_roles",
    "parse_numbers",
    "read_values",
    "register_role",
    "unusable",
]
