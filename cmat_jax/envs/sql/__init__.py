"""DBBench on embedded SQLite: tasks, the per-episode database, MySQL semantics, the Checker, grading."""
