"""The coordinator's client (dictdb_shm.coordinator.client) against a real
coordinator process: starting one, asking it, errors coming back as their
own class, a dead coordinator replaced, status and destroy."""

from __future__ import annotations

import os

import pytest

from dictdb_shm import (CoordinatorError, DatabaseNotFoundError, DuplicateTableError,
                        InvalidArgumentError, TableNotFoundError, names)
from dictdb_shm.coordinator import client
from dictdb_shm.procinfo import is_alive, own_identity, start_ticks
from proctools import kill_coordinator

META = {"pk": "id", "schema": None}


def test_ensure_running_creates_the_database_and_one_coordinator(db_name):
    assert not client.catalog_exists(db_name) and not client.coordinator_running(db_name)
    client.ensure_running(db_name, create=True)
    info = client.status(db_name)
    pid = info["coordinator_pid"]
    assert info["exists"] and info["coordinator_running"] and not info["private"]
    assert info["tables"] == [] and pid != os.getpid() and is_alive(pid, start_ticks(pid))
    client.ensure_running(db_name, create=True)           # already served: nothing new
    client.ensure_running(db_name, create=False)
    assert client.status(db_name)["coordinator_pid"] == pid
    assert client.request(db_name, "ping") == pid


def test_attaching_only_to_a_missing_database_creates_nothing(db_name):
    with pytest.raises(DatabaseNotFoundError, match=f"no database named '{db_name}'"):
        client.ensure_running(db_name, create=False)
    assert not client.catalog_exists(db_name) and names.shm_entries(db_name) == []
    assert not os.path.exists(names.coordinator_log(db_name))


def test_requests_edit_the_catalog_and_errors_come_back_as_their_class(db_name):
    client.ensure_running(db_name, create=True)
    index, uid = client.request(db_name, "create_table", "t", META)
    assert isinstance(index, int) and uid >= 1
    assert client.status(db_name)["tables"] == ["t"]
    with pytest.raises(DuplicateTableError, match="table 't' already exists") as info:
        client.request(db_name, "create_table", "t", META)
    assert info.value.hint == DuplicateTableError.hint
    with pytest.raises(InvalidArgumentError, match="a table definition is a dict"):
        client.request(db_name, "create_table", "u", "not a dict")
    assert client.request(db_name, "drop_table", "t") is None
    with pytest.raises(TableNotFoundError, match="no table 't'"):
        client.request(db_name, "drop_table", "t")
    with pytest.raises(CoordinatorError, match="unknown request 'format_disk'"):
        client.request(db_name, "format_disk")
    assert client.status(db_name)["tables"] == []


def test_a_request_finds_a_new_coordinator_when_its_coordinator_died(db_name):
    client.ensure_running(db_name, create=True)
    client.request(db_name, "create_table", "kept", META)
    old = client.status(db_name)["coordinator_pid"]
    kill_coordinator(db_name)
    assert client.catalog_exists(db_name) and not client.coordinator_running(db_name)
    assert client.status(db_name)["coordinator_pid"] is None
    client.request(db_name, "create_table", "after", META)   # starts one that adopts the catalog
    info = client.status(db_name)
    assert info["coordinator_pid"] not in (None, old)
    assert sorted(info["tables"]) == ["after", "kept"]


def test_a_private_database_keeps_its_flag_and_owner(db_name):
    client.ensure_running(db_name, create=True, private=True, owner=own_identity())
    assert client.status(db_name)["private"] is True
    kill_coordinator(db_name)
    client.ensure_running(db_name, create=False)           # the new coordinator reads the header
    assert client.status(db_name)["private"] is True


def test_status_of_a_missing_database(db_name):
    assert client.status(db_name) == {"name": db_name, "exists": False,
                                      "coordinator_running": False}


def test_destroy_removes_the_database_its_coordinator_socket_and_log(db_name):
    client.ensure_running(db_name, create=True)
    client.request(db_name, "create_table", "t", META)
    socket_path = names.coordinator_socket(db_name)
    assert os.path.exists(socket_path) and os.path.exists(names.coordinator_log(db_name))
    client.destroy(db_name)
    assert names.shm_entries(db_name) == []
    assert client.status(db_name) == {"name": db_name, "exists": False,
                                      "coordinator_running": False}
    assert not os.path.exists(socket_path)
    assert not os.path.exists(names.coordinator_log(db_name))
    client.destroy(db_name)                                # again: nothing to do, no error


def test_destroy_works_when_no_coordinator_runs(db_name):
    client.ensure_running(db_name, create=True)
    client.request(db_name, "create_table", "t", META)
    kill_coordinator(db_name)
    client.destroy(db_name)
    assert names.shm_entries(db_name) == [] and not client.coordinator_running(db_name)
