"""The systemd deployment files in ``contrib/systemd``: the ``goto@.service`` template and its example
env files.

The unit is read with a small parser of our own: systemd allows a key to repeat (``configparser``
would keep only the last value), and the tests only need ``section -> key -> [values]``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from goto_tw.nursery import RECOMMENDED_NURSERY
from goto_tw.tap import Options

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
UNIT = CONTRIB / "goto@.service"
ENV_FILES = sorted(CONTRIB.glob("*.env"))

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Return ``{section: {key: [value, ...]}}`` for a systemd unit file, repeated keys kept in order.

    Comments (``#``/``;``) and blank lines are skipped; a trailing backslash continues the line.
    """
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    logical = re.sub(r"\\\n", " ", text)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"assignment before any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def parse_env_file(text: str) -> dict[str, str]:
    """Return the assignments of a systemd ``EnvironmentFile=`` written in its plain form.

    Only unquoted single-line values are supported: that is all our examples use, and a quoted or
    continued value would be read differently here than by systemd, so it fails loudly instead.
    """
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        value = value.strip()
        assert not value.endswith("\\"), f"continued lines are not supported here: {line!r}"
        assert value[:1] not in ("'", '"'), f"quoted values are not supported here: {line!r}"
        env[key.strip()] = value
    return env


def service() -> dict[str, list[str]]:
    """Return the ``[Service]`` section of the unit template."""
    return parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]


def only(section: dict[str, list[str]], key: str) -> str:
    """Return the value of ``key``, which must be set exactly once."""
    values = section.get(key, [])
    assert len(values) == 1, f"{key}= should be set exactly once, found {values!r}"
    return values[0]


def exec_start_words() -> list[str]:
    """Return the words of the unit's ``ExecStart=`` command line (no prefixes such as ``-`` or ``@``)."""
    words = shlex.split(only(service(), "ExecStart"))
    assert words[0].startswith("/"), f"ExecStart should name its binary by absolute path: {words[0]!r}"
    return words


def test_exec_start_runs_twistd_in_the_foreground() -> None:
    """ExecStart runs ``twistd`` in the foreground without a pid file, then the ``goto`` plugin with
    ``$GOTO_OPTS`` (unbraced, so systemd splits it into words) among the plugin's options."""
    words = exec_start_words()
    assert Path(words[0]).name == "twistd"
    goto = words.index("goto")
    twistd_options = words[1:goto]
    assert {"-n", "--nodaemon"} & set(twistd_options)
    assert "--pidfile=" in twistd_options
    assert "$GOTO_OPTS" in words[goto + 1 :]


def test_options_come_from_a_required_per_instance_env_file() -> None:
    """Each instance reads ``/etc/goto/<instance>.env``, and a missing file stops the start
    (no ``-`` prefix): an unconfigured instance must not come up on the default port."""
    assert only(service(), "EnvironmentFile") == "/etc/goto/%i.env"


def test_rpc_secret_is_passed_as_a_credential() -> None:
    """The shared RPC secret is loaded from ``/etc/goto/rpc-secret`` as a systemd credential (readable
    by the dynamic user, unlike the root-owned original) and handed to ``--rpc-secret-file``."""
    assert only(service(), "LoadCredential") == "rpc-secret:/etc/goto/rpc-secret"
    words = exec_start_words()
    option = words.index("--rpc-secret-file")
    assert option > words.index("goto")
    assert words[option + 1] == "${CREDENTIALS_DIRECTORY}/rpc-secret"


def test_stop_and_restart_policy() -> None:
    """The process is restarted when it fails, and when a reload's SIGHUP killed it before goto
    handles SIGHUP (review 39: systemd counts that death as clean, which ``on-failure`` leaves
    stopped); twistd's exit status 143 after SIGTERM (a normal ``systemctl stop``) counts as a
    clean stop; stopping is bounded in time."""
    section = service()
    assert only(section, "Restart") == "on-failure"
    assert "SIGHUP" in only(section, "RestartForceExitStatus").split()
    success = [word for value in section.get("SuccessExitStatus", []) for word in value.split()]
    assert "143" in success
    assert only(section, "TimeoutStopSec")


def test_reload_sends_sighup() -> None:
    """Review 34: ``systemctl reload`` re-reads the keys and block files (the process reloads them on
    SIGHUP, and ignores SIGHUP before its reloader is up)."""
    assert only(service(), "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_data_lives_in_the_state_directory() -> None:
    """Each instance gets its own state directory, which is also its working directory, so the
    default data file ``store.json`` lands there."""
    section = service()
    assert only(section, "StateDirectory") == "goto/%i"
    assert only(section, "WorkingDirectory") == "/var/lib/goto/%i"


def test_runs_unprivileged_in_a_sandbox() -> None:
    """The daemon runs as an unprivileged user with no capabilities, a read-only file system apart
    from its state directory, a private /tmp and no way to regain privileges."""
    section = service()
    assert only(section, "DynamicUser") == "yes" or only(section, "User") not in ("", "root")
    assert only(section, "ProtectSystem") == "strict"
    assert only(section, "PrivateTmp") == "yes"
    assert only(section, "NoNewPrivileges") == "yes"
    assert only(section, "CapabilityBoundingSet") == ""
    assert set(only(section, "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_waits_for_the_network_and_installs_for_boot() -> None:
    """The unit starts once the network is up, and ``systemctl enable`` hooks it into boot."""
    unit = parse_unit(UNIT.read_text(encoding="utf-8"))
    assert "network-online.target" in only(unit["Unit"], "After").split()
    assert "network-online.target" in only(unit["Unit"], "Wants").split()
    assert only(unit["Install"], "WantedBy") == "multi-user.target"


def test_there_are_example_env_files() -> None:
    """The examples cover a master and a slave."""
    assert {path.name for path in ENV_FILES} >= {"master.env", "slave1.env"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=[path.name for path in ENV_FILES])
def test_example_env_file_is_accepted_by_the_daemon(env_file: Path, tmp_path: Path) -> None:
    """The plugin's options the unit would pass for this env file (those on the ExecStart line and
    ``$GOTO_OPTS``, split as systemd splits them) are accepted by ``goto``'s real option parser.

    ``${CREDENTIALS_DIRECTORY}`` is pointed at a temporary directory holding a secret, since the
    option may insist that its file exists.
    """
    env = parse_env_file(env_file.read_text(encoding="utf-8"))
    assert set(env) == {"GOTO_OPTS", "PYPY_GC_NURSERY"}
    (tmp_path / "rpc-secret").write_text("example-secret", encoding="utf-8")
    words = exec_start_words()
    argv: list[str] = []
    for word in words[words.index("goto") + 1 :]:
        if word == "$GOTO_OPTS":
            argv.extend(shlex.split(env["GOTO_OPTS"]))
        else:
            argv.append(word.replace("${CREDENTIALS_DIRECTORY}", str(tmp_path)))
    assert "$" not in " ".join(argv), f"unexpanded variable left in {argv!r}"
    Options().parseOptions(argv)


@pytest.mark.parametrize("env_file", ENV_FILES, ids=[path.name for path in ENV_FILES])
def test_example_env_file_gives_pypy_the_nursery_goto_tw_is_measured_with(env_file: Path) -> None:
    """Every instance runs on PyPy with :data:`~goto_tw.nursery.RECOMMENDED_NURSERY`, the size
    ``bench/run.py`` measures and ``goto_tw.nursery``'s start-up warning recommends."""
    env = parse_env_file(env_file.read_text(encoding="utf-8"))
    assert env["PYPY_GC_NURSERY"] == RECOMMENDED_NURSERY


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds nothing wrong with an instance of the template.

    The instance is a copy named ``goto@test.service`` whose ExecStart binary is rewritten to an
    executable that exists here (verify checks it). Nothing else is changed: verify does not read
    the env file or the credential. It exits 0 even for unknown keys, so its messages about our
    unit count as failures too; messages about other units on the host are not our concern.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text, replaced = re.subn(
        r"^ExecStart=\S+", f"ExecStart={sys.executable}", UNIT.read_text(encoding="utf-8"), flags=re.M
    )
    assert replaced == 1
    instance = tmp_path / "goto@test.service"
    instance.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(instance)], capture_output=True, text=True, timeout=120, check=False
    )
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "goto@test" in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert ours == []
