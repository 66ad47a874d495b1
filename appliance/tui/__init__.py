"""The admin console: a Textual terminal UI over the REST API (`appliance console`)."""
