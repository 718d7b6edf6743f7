"""The SQL environment's adversarial corpus and the runner that checks the sandbox's promises (fuzz.py;
tools/fuzz_sql.py, docs/sql_env.md)."""
