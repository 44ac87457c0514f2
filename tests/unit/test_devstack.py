"""Where the local stack keeps its servers' data: memory when it has room, the state dir otherwise."""

from __future__ import annotations

from pathlib import Path

from scripts import devstack


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
