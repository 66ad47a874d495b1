"""Route handlers, one module per area; each only translates HTTP to Appliance calls."""
