"""`driptag relay serve | status | dead-letters` given a --spool that is not a relay's spool: one line naming
the file, exit status 2, and the file left exactly as it was (a relay must never add its tables to another
program's database). And a spool where none can be made: one line, exit status 1. `relay status --config`
reads the budgets without the tokens."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from driptag.relay.config import load_config
from driptag.relay.spool import Spool
from relay_support import ACCOUNT, source, write_config

COMMANDS = [
    ["status"],
    ["dead-letters"],
    ["dead-letters", "--retry"],
    ["dead-letters", "--purge"],
    ["serve", "--config", "relay.json", "--port", "0", "--drip-api", "http://127.0.0.1:9"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_file_that_is_not_sqlite_is_refused_in_one_line(run, tmp_path, args):
    write_config(tmp_path / "relay.json")
    spool = tmp_path / "notes.txt"
    spool.write_text("shopping list\n", encoding="utf-8")
    status, out, err = run("relay", *args, "--spool", str(spool))
    assert (status, out, err) == (2, "", [f"driptag: --spool: {spool}: not a relay spool (file is not a database)"])
    assert spool.read_text(encoding="utf-8") == "shopping list\n"
    assert not Path(f"{spool}-wal").exists()


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_another_programs_sqlite_database_is_refused_and_left_as_it_was(run, tmp_path, args):
    write_config(tmp_path / "relay.json")
    spool = tmp_path / "crm.sqlite3"
    with sqlite3.connect(spool) as db:
        db.execute("CREATE TABLE contacts (email TEXT)")
    status, out, err = run("relay", *args, "--spool", str(spool))
    assert (status, out, err) == (
        2, "", [f"driptag: --spool: {spool}: not a relay spool (an SQLite database with other tables)"])
    with sqlite3.connect(spool) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master")]
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert (tables, journal) == (["contacts"], "delete"), "the relay changed somebody else's database"


def test_serve_with_a_spool_in_a_missing_folder_is_one_line_and_exit_1(run, tmp_path):
    write_config(tmp_path / "relay.json")
    spool = tmp_path / "missing" / "relay.sqlite3"
    status, out, err = run("relay", *COMMANDS[-1], "--spool", str(spool))
    assert (status, out, err) == (1, "", [f"driptag: --spool: cannot create {spool}.lock: No such file or directory"])


def test_status_reads_relay_json_without_the_tokens_environment_variables(run, tmp_path, monkeypatch):
    monkeypatch.delenv("DRIP_API_TOKEN", raising=False)
    write_config(tmp_path / "relay.json", source(apiToken="${DRIP_API_TOKEN}",
                                                 rateLimits={"single": 100, "batch": 5, "windowSeconds": 60}))
    spool = Spool(tmp_path / "relay.sqlite3")
    spool.source_id(load_config(tmp_path / "relay.json", tokens=False).sources[0])  # as a serving relay would
    spool.close()
    status, out, err = run("relay", "status", "--config", "relay.json", "--spool", "relay.sqlite3", "--json")
    assert (status, err) == (0, []), err
    (reported,) = json.loads(out)["sources"]
    assert reported["account"] == ACCOUNT
    assert [(kind, budget["limit"], budget["windowSeconds"]) for kind, budget in reported["requests"].items()] == \
        [("single", 100, 60), ("batch", 5, 60)], "the budgets of relay.json"
    serve = run("relay", "serve", "--config", "relay.json", "--spool", "relay.sqlite3")
    assert serve == (2, "", ["driptag: relay.json: sources[0].apiToken: the environment variable DRIP_API_TOKEN "
                             "is not set"]), "serve needs the tokens"
