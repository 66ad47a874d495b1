"""The REST API: a Litestar app over the Appliance façade."""
