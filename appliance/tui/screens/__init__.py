"""The console's screens, one module each: dashboard, knowledge, search, chat, jobs, models, keys, logs."""
