"""Seeded DBBench-style training tasks, checked by the SQL environment (docs/tasks.md): the public API is
generate.py (generate_tasks, write_tasks; tools/make_sql_tasks.py), the profiles profiles.py."""
