"""Operating an installation: backups and restores, health checks (doctor), upgrades' migrations."""
