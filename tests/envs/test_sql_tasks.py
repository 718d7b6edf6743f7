"""Loading DBBench JSONL into typed tasks, and the errors for malformed records."""

import pytest

from cmat_jax.envs.sql.tasks import TaskFormatError, load_tasks
from tests.envs.sql_helpers import make_record, write_jsonl


def test_loads_typed_records_skipping_blank_lines(tmp_path):
    select = make_record(label=["Paris"])
    update = make_record("UPDATE", label=["UPDATE People SET City = 'Lyon'"], answer_md5="[('abc',)]")
    path = write_jsonl(tmp_path / "t.jsonl", [select, "", update])
    first, second = load_tasks(path)
    assert first.task_id == "t.jsonl:1" and second.task_id == "t.jsonl:3"
    assert first.columns == ("Name", "Score", "City")
    assert first.rows[1] == ("adam", 100, "Berlin") and first.rows[3][1] is None
    assert first.label == ("Paris",) and first.answer_md5 is None and not first.is_mutation
    assert first.prompt == first.description + "\n" + first.add_description
    assert second.is_mutation and second.gold_sql.startswith("UPDATE") and second.answer_md5 == "[('abc',)]"
    with pytest.raises(ValueError, match="only mutations carry gold SQL"):
        first.gold_sql


def _error_for(tmp_path, record):
    path = write_jsonl(tmp_path / "bad.jsonl", [make_record(), record])
    with pytest.raises(TaskFormatError) as info:
        load_tasks(path)
    message = str(info.value)
    assert f"{path}:2:" in message  # file and line
    return message


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda r: r.pop("description"), "'description' is missing"),
        (lambda r: r.update(type="other"), "field 'type'"),
        (lambda r: r.update(type=["SELECT-ish"]), "field 'type'"),
        (lambda r: r["table"].pop("table_name"), "'table.table_name' is missing"),
        (lambda r: r["table"]["table_info"].update(columns=[]), "field 'table.table_info.columns'"),
        (lambda r: r["table"]["table_info"]["columns"].append({"type": "TEXT"}), "table.table_info.columns[3]"),
        (lambda r: r["table"]["table_info"]["rows"][2].pop(), "table.table_info.rows[2]"),
        (lambda r: r["table"]["table_info"]["rows"][0].__setitem__(1, [5]), "table.table_info.rows[0][1]"),
        (lambda r: r["table"]["table_info"]["rows"][0].__setitem__(1, True), "table.table_info.rows[0][1]"),
        (lambda r: r.update(label="Paris"), "field 'label'"),
        (lambda r: r.update(label=[{"a": 1}]), "field 'label[0]'"),
    ],
)
def test_malformed_records_name_line_and_field(tmp_path, change, field):
    record = make_record()
    change(record)
    assert field in _error_for(tmp_path, record)


def test_mutation_records_need_gold_sql_and_answer_md5(tmp_path):
    no_hash = make_record("INSERT", label=["INSERT INTO People VALUES ('a', '1', 'b')"])
    assert "'answer_md5' is missing" in _error_for(tmp_path, no_hash)
    no_sql = make_record("UPDATE", label=[], answer_md5="[(None,)]")
    assert "gold SQL" in _error_for(tmp_path, no_sql)


def test_invalid_json_and_non_objects(tmp_path):
    assert "not valid JSON" in _error_for(tmp_path, '{"description": ')
    assert "expected a JSON object" in _error_for(tmp_path, "[1, 2]")


def test_undecodable_and_deeply_nested_lines_name_their_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'\n{"description": "caf\xe9"}\n')
    with pytest.raises(TaskFormatError, match=r"bad\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 21\)"):
        load_tasks(path)
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(TaskFormatError, match=r"bad\.jsonl:1: JSON nested too deeply"):
        load_tasks(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tasks(tmp_path / "absent.jsonl")
    with pytest.raises(TaskFormatError, match="holds no tasks"):
        load_tasks(write_jsonl(tmp_path / "empty.jsonl", [""]))


def test_dev_tasks_load(dev_tasks):
    assert len(dev_tasks) == 60
    assert sum(t.task_type == "INSERT" for t in dev_tasks) == 20
    assert sum(t.task_type == "UPDATE" for t in dev_tasks) == 20
