"""The local stack's choices: where its servers keep their data (memory when it has room, the
state dir otherwise) and which ports they listen on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scripts import devstack
from scripts.devstack import ports


def test_data_goes_to_memory_when_it_has_room(tmp_path: Path) -> None:
    memory, state = tmp_path / "shm", tmp_path / "state"
    memory.mkdir()
    chosen = devstack.data_dir_for(state, memory_root=memory, min_free=0)
    assert chosen.parent == memory
    assert devstack.in_memory(chosen, memory_root=memory)
    assert chosen == devstack.data_dir_for(state, memory_root=memory, min_free=0), "stable across calls"
    assert chosen != devstack.data_dir_for(tmp_path / "other-state", memory_root=memory, min_free=0)


def test_data_stays_in_the_state_dir_without_room_or_memory(tmp_path: Path) -> None:
    memory, state = tmp_path / "shm", tmp_path / "state"
    assert devstack.data_dir_for(state, memory_root=memory, min_free=0) == state, "no memory file system"
    memory.mkdir()
    assert devstack.data_dir_for(state, memory_root=memory, min_free=2**62) == state, "not enough room"
    assert not devstack.in_memory(state, memory_root=memory)


def test_a_state_file_from_before_data_dirs_means_the_state_dir() -> None:
    info = devstack.StackInfo("/tmp/state", 9092, 8333, 1, 2)
    assert info.data == Path("/tmp/state")


def test_free_ports_lie_below_the_ephemeral_range_and_are_not_handed_out_twice() -> None:
    low = ports.ephemeral_low()
    if low - ports.LISTEN_PORTS_FROM < 1000:
        pytest.skip(f"no room below this kernel's ephemeral range (it starts at {low})")
    chosen = [devstack.free_port() for _ in range(200)]
    assert len(set(chosen)) == len(chosen)
    assert all(ports.LISTEN_PORTS_FROM <= port < low for port in chosen)


def test_a_free_port_can_be_listened_on() -> None:
    port = devstack.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert devstack.port_open(port)
