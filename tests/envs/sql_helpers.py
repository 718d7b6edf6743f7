"""Small DBBench-format tasks built by the tests, and where the real dev tasks live."""

import copy
import json
import os

from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, parse_task

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEV_TASKS = DBBENCH_DEV_TASKS  # shipped with the package

PEOPLE = {
    "table_name": "People",
    "table_info": {
        "columns": [
            {"name": "Name", "type": "TEXT"},
            {"name": "Score", "type": "INT"},
            {"name": "City", "type": "TEXT"},
        ],
        "rows": [
            ["Émile", "5", "Paris"],
            ["adam", 100, "Berlin"],
            ["Zoë", "17", "Berlin"],
            ["Bob", None, "Rome"],
        ],
    },
}


def make_record(task_type="other", label=("Paris",), answer_md5=None, table=None, **fields):
    """A DBBench JSON record over the People table (or `table`)."""
    table = copy.deepcopy(table or PEOPLE)
    names = [c["name"] for c in table["table_info"]["columns"]]
    record = {
        "description": "Where does Émile live?",
        "add_description": f"The name of this table is {table['table_name']}, and the headers of this table are "
        + ",".join(names)
        + ".",
        "type": [task_type],
        "label": list(label),
        "table": table,
    }
    if answer_md5 is not None:
        record["answer_md5"] = answer_md5
    record.update(fields)
    return record


def make_task(*args, **kwargs):
    return parse_task(make_record(*args, **kwargs), "test:1")


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path
