"""Evaluation in the box: measuring the appliance itself (drift of its traffic, ...)."""
