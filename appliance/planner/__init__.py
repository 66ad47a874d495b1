"""The capacity planner: model shapes from GGUF headers, calibration, the serving model, simulation, sweeps."""
