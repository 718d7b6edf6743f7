"""The CMAT policy update: trajectories -> token rows (rows.py), group advantages
(advantages.py), token-level objectives (objectives.py), and the CMAT loop."""
