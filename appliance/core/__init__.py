"""The Appliance (the composition root) and its capability services, one module each."""

from appliance.core.appliance import Appliance

__all__ = ["Appliance"]
