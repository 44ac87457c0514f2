"""Kafka's SASL_SSL mode for the local stack: its users' secrets, the broker's listeners, the clients' settings.

In this mode the client listener speaks SASL_SSL only (SCRAM-SHA-512, a certificate from a CA
made when the storage is formatted), the authorizer denies whatever no ACL allows, `admin` is
the one super user, and `worker` and `runner` get only their programs' ACLs (`acls.py`).
Secrets live under `<state dir>/kafka/secrets/` (mode 0700, files 0600).
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.devstack.errors import StackError
from scripts.devstack.tls import make_broker_keystore, make_ca

PLAINTEXT = "plaintext"
SASL_SSL = "sasl_ssl"
MODES = (PLAINTEXT, SASL_SSL)
ADMIN = "admin"
USERS = (ADMIN, "worker", "runner")
MECHANISM = "SCRAM-SHA-512"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise StackError(f"DEV_STACK_SECURITY must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


@dataclass(frozen=True)
class Secrets:
    """The files of a secured stack's secrets folder."""

    folder: Path

    @classmethod
    def of(cls, state_dir: Path) -> Secrets:
        return cls(state_dir / "kafka" / "secrets")

    @property
    def ca(self) -> Path:
        """The CA certificate clients trust (KAFKA_SSL_CAFILE)."""
        return self.folder / "dev-stack-ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker-keystore.pem"

    @property
    def passwords_file(self) -> Path:
        return self.folder / "passwords.json"

    @property
    def admin_properties(self) -> Path:
        """Client settings for Kafka's own tools, as admin."""
        return self.folder / "admin.properties"

    def exists(self) -> bool:
        return all(p.exists() for p in (self.ca, self.keystore, self.passwords_file, self.admin_properties))

    def passwords(self) -> dict[str, str]:
        if not self.passwords_file.exists():
            raise StackError(f"the secured stack's passwords are missing ({self.passwords_file})")
        found: dict[str, str] = json.loads(self.passwords_file.read_text())
        return found

    def password(self, user: str) -> str:
        if user not in USERS:
            raise StackError(f"no such user {user!r}: the secured stack has {', '.join(USERS)}")
        return self.passwords()[user]

    def make(self) -> dict[str, str]:
        """A new CA, broker certificate and password per user, replacing any earlier ones."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, mode=0o700)
        self.folder.chmod(0o700)  # mkdir's mode passes through the umask
        ca = make_ca(self.folder, "dev-stack-ca")
        make_broker_keystore(self.folder, ca)
        # Hex: safe inside the storage tool's `[name=..,password=..]` and a JAAS quoted string.
        passwords = {user: secrets.token_hex(24) for user in USERS}
        _write_private(self.passwords_file, json.dumps(passwords))
        _write_private(self.admin_properties, "\n".join(client_properties(self, ADMIN, passwords[ADMIN])) + "\n")
        return passwords


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def _jaas(login_module: str, user: str, password: str, *extra: str) -> str:
    options = " ".join([f'username="{user}"', f'password="{password}"', *extra])
    return f"{login_module} required {options};"


def client_properties(secrets_: Secrets, user: str, password: str) -> list[str]:
    """A Java client's settings for `user` on the SASL_SSL listener."""
    return [
        "security.protocol=SASL_SSL",
        f"sasl.mechanism={MECHANISM}",
        f"sasl.jaas.config={_jaas(_SCRAM_LOGIN, user, password)}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={secrets_.ca}",
    ]


def listener_properties(mode: str, secrets_: Secrets, port: int, controller_port: int) -> list[str]:
    """The broker's listener, authentication and authorizer settings for `mode`."""
    if mode == PLAINTEXT:
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
        ]
    admin_password = secrets_.password(ADMIN)
    # The controller listener stays on the loopback; it authenticates the broker as admin with
    # PLAIN, since KRaft cannot check SCRAM there (its credentials live in the log it serves).
    controller_jaas = _jaas(_PLAIN_LOGIN, ADMIN, admin_password, f'user_{ADMIN}="{admin_password}"')
    return [
        f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name=SASL_SSL",
        f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
        "sasl.mechanism.controller.protocol=PLAIN",
        f"listener.name.sasl_ssl.sasl.enabled.mechanisms={MECHANISM}",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={_jaas(_SCRAM_LOGIN, ADMIN, admin_password)}",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={controller_jaas}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={secrets_.keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={secrets_.ca}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN}",
        "allow.everyone.if.no.acl.found=false",
    ]


def scram_arguments(passwords: dict[str, str]) -> list[str]:
    """The storage tool's arguments that create every user's SCRAM credential at format time."""
    args: list[str] = []
    for user, password in passwords.items():
        args += ["--add-scram", f"{MECHANISM}=[name={user},password={password}]"]
    return args


def client_env(secrets_: Secrets, user: str) -> dict[str, str]:
    """The project's Kafka settings (beyond the bootstrap servers) that connect as `user`."""
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": MECHANISM,
        "KAFKA_SASL_PLAIN_USERNAME": user,
        "KAFKA_SASL_PLAIN_PASSWORD": secrets_.password(user),
        "KAFKA_SSL_CAFILE": str(secrets_.ca),
    }


def client_options(secrets_: Secrets, user: str) -> dict[str, Any]:
    """aiokafka's connection options for `user`."""
    from aiokafka.helpers import create_ssl_context

    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": user,
        "sasl_plain_password": secrets_.password(user),
        "ssl_context": create_ssl_context(cafile=str(secrets_.ca)),
    }


def redact(text: str, secrets_: Secrets) -> str:
    """`text` with every password of the stack replaced, for error messages that quote a tool."""
    if secrets_.passwords_file.exists():
        for password in secrets_.passwords().values():
            text = text.replace(password, "***")
    return text
