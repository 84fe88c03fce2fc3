"""The model catalog: who exists, what they cost, what they can do."""

from tierwise.catalog.spec import (
    Capabilities,
    CapabilityProfile,
    Catalog,
    ModelSpec,
    Prices,
    load_catalog,
)

__all__ = ["Capabilities", "CapabilityProfile", "Catalog", "ModelSpec", "Prices", "load_catalog"]
