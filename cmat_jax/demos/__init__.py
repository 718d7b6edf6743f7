"""Demonstrations for the SFT warm start: the scripted oracle (oracle.py), typical mistakes and the recovery
from them (mistakes.py), reflection demonstrations (reflections.py), and the warm start's chat JSONL
(warmup.py), all played through the rollout engine."""
