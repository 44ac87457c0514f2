"""Run a command as the owner of the checkout, so that what it writes to out/ belongs to the user.

    python run_as_owner.py CHECKOUT OUT_DIR COMMAND [ARG...]

docker-compose.yml starts the demo services as root and mounts the checkout at CHECKOUT and ./out
at OUT_DIR. A uid fixed in the compose file cannot match every user, and Docker creates a missing
./out as root; so, as root, this hands OUT_DIR to the checkout's owner and becomes that owner.
Where the checkout shows as root's (Docker Desktop, rootless Docker and Podman map container root
to the host user) or OUT_DIR cannot be handed over, the command runs as root, which those engines
write to the host as the user.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def _become_owner(checkout: Path, out_dir: Path) -> None:
    owner = checkout.stat()
    if os.geteuid() != 0 or owner.st_uid == 0:
        return
    if out_dir.stat().st_uid != owner.st_uid:
        try:
            os.chown(out_dir, owner.st_uid, owner.st_gid)
        except OSError:
            return  # a file share that refuses chown: root can still write there
    os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)
    os.environ["HOME"] = tempfile.gettempdir()  # root's home is not writable for the owner


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit("usage: run_as_owner.py CHECKOUT OUT_DIR COMMAND [ARG...]")
    checkout, out_dir, *command = argv
    _become_owner(Path(checkout), Path(out_dir))
    os.execvp(command[0], command)  # noqa: S606  # the command replaces this process, no shell involved


if __name__ == "__main__":
    main(sys.argv[1:])
