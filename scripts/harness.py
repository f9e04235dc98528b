#!/usr/bin/env python3
"""Test and demo harness: a throw-away Synapse homeserver and PostgreSQL cluster.

Standard library only (Python >= 3.9). Every wait is bounded. Progress goes to
stderr prefixed with "harness:"; stdout carries only machine-readable output
(synapse-up: the homeserver URL, pg-up: the database URL, register-user: JSON).

Subcommands:
  synapse-up    --dir DIR --port PORT [--registrations FILE...] [--slots N --slots-dir SLOTDIR]
  synapse-down  --dir DIR
  pg-up         --dir DIR --port PORT
  pg-down       --dir DIR
  register-user --dir DIR --user NAME --password PW [--admin]

Environment:
  FERRY_SYNAPSE_VENV          venv location (default: REPO/.venv/synapse)
  FERRY_HARNESS_PIP_TIMEOUT   seconds for venv creation + pip install (default 600)
  FERRY_HARNESS_APT_TIMEOUT   seconds for apt-get install (postgresql, python3-venv) (default 900)
"""

import argparse
import base64
import fcntl
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SYNAPSE_VERSION = "1.163.2"
SERVER_NAME = "localhost"
# First port of the test slots' appservice listeners (metrics at +1000). FERRY_TEST_SLOT_BASE
# moves them so that two checkouts can run their tests side by side.
SLOT_BASE_PORT = int(os.environ.get("FERRY_TEST_SLOT_BASE", "29400"))

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("FERRY_SYNAPSE_VENV") or REPO_ROOT / ".venv" / "synapse")
PIP_TIMEOUT = float(os.environ.get("FERRY_HARNESS_PIP_TIMEOUT", "600"))
APT_TIMEOUT = float(os.environ.get("FERRY_HARNESS_APT_TIMEOUT", "900"))

HEALTH_TIMEOUT = 60.0
HEALTH_INTERVAL = 0.2
STOP_TIMEOUT = 20.0
HTTP_TIMEOUT = 15.0

# Every rate limiter of Synapse 1.163.2 (synapse/config/ratelimiting.py),
# raised so that tests never see a 429.
UNLIMITED = {"per_second": 10000, "burst_count": 100000}
RATE_LIMITS = {
    "rc_message": UNLIMITED,
    "rc_registration": UNLIMITED,
    "rc_registration_token_validity": UNLIMITED,
    "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
    "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
    "rc_joins_per_room": UNLIMITED,
    "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
    "rc_3pid_validation": UNLIMITED,
    "rc_key_requests": UNLIMITED,
    "rc_admin_redaction": UNLIMITED,
    "rc_media_create": UNLIMITED,
    "rc_room_creation": UNLIMITED,
    "rc_presence": {"per_user": UNLIMITED},
    "rc_delayed_event_mgmt": UNLIMITED,
    "rc_reports": UNLIMITED,
    "rc_user_directory": UNLIMITED,
    "rc_profile": UNLIMITED,
    "rc_third_party_invite": UNLIMITED,
}


# Never route loopback requests through an http_proxy from the environment.
URL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HarnessError(Exception):
    pass


def log(msg):
    print(f"harness: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- small utils


SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
YAML_SPECIAL = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}


def to_yaml(value, indent=0):
    """Minimal YAML emitter for dict/list/str/int/float/bool/None.

    Strings are emitted as JSON strings, which are valid YAML double-quoted
    scalars for the ASCII content written here."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for k, v in value.items():
            key = str(k)
            if not SAFE_KEY.match(key) or key.lower() in YAML_SPECIAL:
                key = json.dumps(key)
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:\n{to_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{key}: {to_yaml(v, 0)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = to_yaml(item, indent + 1).lstrip()
                lines.append(f"{pad}- {inner}")
            else:
                lines.append(f"{pad}- {to_yaml(item, 0)}")
        return "\n".join(lines)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value))


def write_file(path, text, mode=0o644):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_json(path, obj, mode=0o644):
    write_file(path, json.dumps(obj, indent=2) + "\n", mode)


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path} not found (was the service started with this --dir?)")
    except ValueError as e:
        raise HarnessError(f"{path} is not valid JSON: {e}")


def tail(path, lines=40):
    try:
        data = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(data[-lines:]) or f"({path} is empty)"


def port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pid_alive(pid):
    """True if pid exists and is not a zombie (containers may not reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def pid_cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run(cmd, timeout, what, **kw):
    """Run a command with a time bound; raise HarnessError with its output on failure."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout, text=True, **kw)
    except subprocess.TimeoutExpired as e:
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
        raise HarnessError(f"{what}: timed out after {timeout:.0f} s\n{out[-4000:]}")
    except FileNotFoundError as e:
        raise HarnessError(f"{what}: command not found: {e.filename}")
    if p.returncode != 0:
        raise HarnessError(f"{what}: exit code {p.returncode}\n{p.stdout[-4000:]}")
    return p.stdout


def http(method, url, body=None, token=None, timeout=HTTP_TIMEOUT):
    """Return (status, parsed JSON or raw text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with URL_OPENER.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise HarnessError(f"{method} {url}: {getattr(e, 'reason', e)}")
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def stop_pid(pid, name, timeout=STOP_TIMEOUT):
    """SIGTERM the process group (setsid) / process, wait, then SIGKILL. Bounded."""
    if not pid_alive(pid):
        return
    t0 = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                log(f"{name} (pid {pid}) stopped in {time.monotonic() - t0:.1f} s")
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            log(f"{name} (pid {pid}) still running after {timeout:.0f} s; sending SIGKILL")
    raise HarnessError(f"{name} (pid {pid}) did not die after SIGKILL")


# ---------------------------------------------------------------- synapse venv


def venv_python():
    return VENV / "bin" / "python"


def installed_synapse_version():
    py = venv_python()
    if not py.exists():
        return None
    try:
        p = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('matrix-synapse'))"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL, timeout=60, text=True)
    except (subprocess.TimeoutExpired, OSError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def ensure_venv():
    VENV.parent.mkdir(parents=True, exist_ok=True)
    lock_path = VENV.parent / (VENV.name + ".lock")
    with open(lock_path, "w") as lock:
        deadline = time.monotonic() + PIP_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"another harness holds {lock_path} for more than {PIP_TIMEOUT:.0f} s")
                time.sleep(0.5)
        version = installed_synapse_version()
        if version == SYNAPSE_VERSION:
            log(f"synapse {SYNAPSE_VERSION} already installed in {VENV}")
            return
        t0 = time.monotonic()
        if not venv_python().exists() or not (VENV / "bin" / "pip").exists():
            if VENV.exists():
                shutil.rmtree(VENV)
            log(f"creating venv {VENV}")
            try:
                run([sys.executable, "-m", "venv", str(VENV)], timeout=120, what="python3 -m venv")
            except HarnessError as e:
                # Debian's python3 lacks ensurepip unless python3-venv is installed.
                if not (is_root() and shutil.which("apt-get") and sys.executable.startswith("/usr/bin/")):
                    raise HarnessError(f"{e}\n(on Debian, `apt-get install -y python3-venv` provides ensurepip)")
                shutil.rmtree(VENV, ignore_errors=True)
                apt_install(["python3-venv"])
                run([sys.executable, "-m", "venv", str(VENV)], timeout=120, what="python3 -m venv")
        log(f"installing matrix-synapse=={SYNAPSE_VERSION} (found: {version or 'none'}; timeout {PIP_TIMEOUT:.0f} s)")
        remaining = max(30.0, PIP_TIMEOUT - (time.monotonic() - t0))
        run([str(VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "--no-input",
             f"matrix-synapse=={SYNAPSE_VERSION}"], timeout=remaining, what="pip install matrix-synapse")
        version = installed_synapse_version()
        if version != SYNAPSE_VERSION:
            raise HarnessError(f"after pip install, synapse.__version__ is {version!r}, expected {SYNAPSE_VERSION}")
        log(f"pip install took {time.monotonic() - t0:.1f} s")


# ---------------------------------------------------------------- synapse config


def signing_key_line():
    # Same format as signedjson.key.write_signing_keys: "<alg> <version> <unpadded base64 seed>".
    seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    version = "a_" + secrets.token_hex(2)
    return f"ed25519 {version} {seed}\n"


def slot_registration(i):
    reg = {
        "id": f"ferrytest{i}",
        "url": f"http://127.0.0.1:{SLOT_BASE_PORT + i}",
        "as_token": secrets.token_hex(32),
        "hs_token": secrets.token_hex(32),
        "sender_localpart": f"ferrytest{i}_bot",
        "rate_limited": False,
        "namespaces": {
            "users": [{"regex": f"@ferrytest{i}_.*:{SERVER_NAME}", "exclusive": True}],
            "aliases": [{"regex": f"#ferrytest{i}_.*:{SERVER_NAME}", "exclusive": True}],
            "rooms": [],
        },
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        "org.matrix.msc3202": True,
        "io.element.msc4190": True,
    }
    return reg


def write_slots(n, slots_dir):
    slots_dir = Path(slots_dir).resolve()
    slots_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        reg = slot_registration(i)
        reg_path = slots_dir / f"slot-{i}.yaml"
        write_file(reg_path, to_yaml(reg) + "\n", 0o600)
        write_json(slots_dir / f"slot-{i}.json", {
            "id": reg["id"],
            "as_token": reg["as_token"],
            "hs_token": reg["hs_token"],
            "port": SLOT_BASE_PORT + i,
            "bot_localpart": reg["sender_localpart"],
            "namespace_prefix": f"ferrytest{i}_",
            "registration_path": str(reg_path),
        }, 0o600)
        paths.append(reg_path)
    return paths


def log_config(log_path):
    return {
        "version": 1,
        "formatters": {"precise": {
            "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
        "handlers": {"file": {
            "class": "logging.FileHandler",
            "formatter": "precise",
            "filename": str(log_path),
            "encoding": "utf8"}},
        "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def homeserver_config(d, port, shared_secret, registrations):
    cfg = {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(d / "homeserver.pid"),
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            "resources": [{"names": ["client"], "compress": False}],
        }],
        "database": {"name": "sqlite3", "args": {"database": str(d / "data" / "homeserver.db")}},
        "log_config": str(d / "log.config"),
        "media_store_path": str(d / "media_store"),
        "signing_key_path": str(d / "signing.key"),
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        "enable_registration": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "url_preview_enabled": False,
        "report_stats": False,
        "enable_metrics": False,
        "presence": {"enabled": True},
        # Test speed only: cheap password hashing for register-user / login.
        "bcrypt_rounds": 4,
        "app_service_config_files": [str(p) for p in registrations],
        "experimental_features": {
            "msc2409_to_device_messages_enabled": True,
            "msc3202_transaction_extensions": True,
        },
    }
    cfg.update(RATE_LIMITS)
    return cfg


def cmd_synapse_up(a):
    d = Path(a.dir).resolve()
    port = a.port
    if a.slots and not a.slots_dir:
        raise HarnessError("--slots needs --slots-dir")
    registrations = []
    for f in a.registrations or []:
        p = Path(f).resolve()
        if not p.is_file():
            raise HarnessError(f"registration file {p} does not exist")
        registrations.append(p)

    pid_path = d / "synapse.pid"
    if pid_path.exists():
        try:
            old = int(pid_path.read_text().strip())
        except ValueError:
            old = 0
        if old and pid_alive(old) and "synapse.app.homeserver" in pid_cmdline(old):
            raise HarnessError(f"synapse from {d} is already running (pid {old}); run synapse-down first")
    if port_in_use(port):
        raise HarnessError(f"something already listens on 127.0.0.1:{port}; refusing to start synapse there")

    ensure_venv()

    t0 = time.monotonic()
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "media_store").mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if a.slots:
        registrations += write_slots(a.slots, a.slots_dir)
        log(f"wrote {a.slots} appservice slot registrations to {Path(a.slots_dir).resolve()}")

    key_path = d / "signing.key"
    if not key_path.exists():
        write_file(key_path, signing_key_line(), 0o600)
    shared_secret = secrets.token_hex(32)
    log_path = d / "homeserver.log"
    write_file(d / "log.config", to_yaml(log_config(log_path)) + "\n")
    write_file(d / "homeserver.yaml", to_yaml(homeserver_config(d, port, shared_secret, registrations)) + "\n", 0o600)

    stdout_path = d / "synapse.stdout.log"
    with open(stdout_path, "ab") as out:
        proc = subprocess.Popen(
            [str(venv_python()), "-m", "synapse.app.homeserver", "-c", str(d / "homeserver.yaml")],
            cwd=str(d), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # setsid: survives our exit, own process group
    write_file(pid_path, f"{proc.pid}\n")
    hs_url = f"http://127.0.0.1:{port}"
    env = {"hs_url": hs_url, "server_name": SERVER_NAME,
           "registration_shared_secret": shared_secret, "pid": proc.pid,
           "log": str(log_path)}
    write_json(d / "env.json", env, 0o600)

    deadline = time.monotonic() + HEALTH_TIMEOUT
    problem = None
    while True:
        rc = proc.poll()
        if rc is not None:
            problem = f"synapse exited with code {rc} during startup"
            break
        try:
            with URL_OPENER.open(f"{hs_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            problem = f"synapse did not answer {hs_url}/health within {HEALTH_TIMEOUT:.0f} s"
            break
        time.sleep(HEALTH_INTERVAL)
    if problem:
        if proc.poll() is None:
            try:
                stop_pid(proc.pid, "synapse", timeout=5)
            except HarnessError as e:
                log(str(e))
        raise HarnessError(f"{problem}\n--- {stdout_path} (tail) ---\n{tail(stdout_path)}"
                           f"\n--- {log_path} (tail) ---\n{tail(log_path)}")
    log(f"synapse {SYNAPSE_VERSION} up at {hs_url} (pid {proc.pid}, {len(registrations)} appservices) "
        f"in {time.monotonic() - t0:.1f} s; log {log_path}")
    print(hs_url)


def cmd_synapse_down(a):
    d = Path(a.dir).resolve()
    pid_path = d / "synapse.pid"
    if not pid_path.exists():
        log(f"no {pid_path}; nothing to stop")
        return
    try:
        pid = int(pid_path.read_text().strip())
    except ValueError:
        raise HarnessError(f"{pid_path} does not contain a pid")
    if not pid_alive(pid):
        log(f"synapse (pid {pid}) is not running")
    elif "synapse.app.homeserver" not in pid_cmdline(pid):
        log(f"pid {pid} is no longer synapse ({pid_cmdline(pid)[:80]!r}); not killing it")
    else:
        stop_pid(pid, "synapse")
    pid_path.unlink(missing_ok=True)


# ---------------------------------------------------------------- postgres


def is_root():
    return os.geteuid() == 0


def find_pg_bin():
    def version_key(p):
        return tuple(int(x) if x.isdigit() else 0 for x in p.parent.name.split("."))
    cands = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if cands:
        return sorted(cands, key=version_key)[-1]
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            return Path(found).parent
    return None


def apt_install(packages):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    t0 = time.monotonic()
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + packages
    log(f"running {' '.join(cmd)} (timeout {APT_TIMEOUT:.0f} s)")
    try:
        run(cmd, timeout=APT_TIMEOUT, what=f"apt-get install {' '.join(packages)}", env=env)
    except HarnessError as first:
        log(f"apt-get install failed ({str(first).splitlines()[0]}); running apt-get update and retrying")
        remaining = max(60.0, APT_TIMEOUT - (time.monotonic() - t0))
        run(["apt-get", "update"], timeout=remaining, what="apt-get update", env=env)
        remaining = max(60.0, APT_TIMEOUT - (time.monotonic() - t0))
        run(cmd, timeout=remaining, what=f"apt-get install {' '.join(packages)}", env=env)
    log(f"apt-get install {' '.join(packages)} took {time.monotonic() - t0:.1f} s")


def pg_cmd(argv):
    """As root, PostgreSQL refuses to run: drop to the postgres user."""
    if is_root():
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


def postgres_can_use(path):
    """As root: can user postgres reach (traverse) every parent of path?"""
    if not is_root():
        return True
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise HarnessError("running as root but there is no 'postgres' user (is postgresql installed?)")
    for parent in list(Path(path).parents):
        st = parent.stat()
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == pw.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def chown_postgres(path):
    if is_root():
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def cmd_pg_up(a):
    d = Path(a.dir).resolve()
    port = a.port
    t0 = time.monotonic()
    env_path = d / "env.json"
    if env_path.exists():
        old = read_json(env_path)
        if old.get("data_dir") and (Path(old["data_dir"]) / "postmaster.pid").exists():
            raise HarnessError(f"a cluster from {d} may still be running; run pg-down --dir {d} first")
    if port_in_use(port):
        raise HarnessError(f"something already listens on 127.0.0.1:{port}; refusing to start postgres there")

    pgbin = find_pg_bin()
    if pgbin is None:
        if is_root() and shutil.which("apt-get"):
            log("no PostgreSQL server binaries found; installing them")
            apt_install(["postgresql"])
            pgbin = find_pg_bin()
        if pgbin is None:
            raise HarnessError("no PostgreSQL server binaries found (/usr/lib/postgresql/*/bin/initdb); "
                               "install them, e.g. `apt-get install -y postgresql`")
    d.mkdir(parents=True, exist_ok=True)
    data = d / "data"
    if data.exists():
        shutil.rmtree(data)
    if postgres_can_use(data):
        data.mkdir(mode=0o700)
    else:
        # The user postgres cannot traverse DIR's parents: keep the cluster in /tmp.
        data = Path(tempfile.mkdtemp(prefix="ferry-pg-"))
        log(f"user postgres cannot reach {d}; using {data} for the cluster")
    chown_postgres(data)

    # Unix socket only when its path fits in sun_path (107 bytes); TCP is what we use anyway.
    sock_dir = str(data) if len(str(data)) + len("/.s.PGSQL.65535") < 100 else ""
    run(pg_cmd([str(pgbin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]), timeout=120, what="initdb")
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{sock_dir}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    log_path = data / "server.log"
    try:
        run(pg_cmd([str(pgbin / "pg_ctl"), "-D", str(data), "-l", str(log_path), "-w", "-t", "60",
                    "-o", opts, "start"]), timeout=90, what="pg_ctl start")
    except HarnessError as e:
        raise HarnessError(f"{e}\n--- {log_path} (tail) ---\n{tail(log_path)}")
    url = f"postgres://postgres@127.0.0.1:{port}/postgres"
    write_json(env_path, {"url": url, "port": port, "data_dir": str(data), "pg_bin": str(pgbin),
                          "log": str(log_path)})
    # pg_ctl -w returned: the server accepts connections. Double-check over TCP.
    run([str(pgbin / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "10"],
        timeout=15, what="pg_isready")
    log(f"postgres ({pgbin.parent.name}) up at 127.0.0.1:{port} in {time.monotonic() - t0:.1f} s; data {data}")
    print(url)


def cmd_pg_down(a):
    d = Path(a.dir).resolve()
    env_path = d / "env.json"
    if not env_path.exists():
        log(f"no {env_path}; nothing to stop")
        return
    env = read_json(env_path)
    data = Path(env["data_dir"])
    pgbin = Path(env["pg_bin"])
    pid_file = data / "postmaster.pid"
    if pid_file.exists():
        t0 = time.monotonic()
        try:
            run(pg_cmd([str(pgbin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "20", "stop"]),
                timeout=30, what="pg_ctl stop")
            log(f"postgres stopped in {time.monotonic() - t0:.1f} s")
        except HarnessError as e:
            log(f"{e}")
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = 0
            if pid and "postgres" in pid_cmdline(pid):
                stop_pid(pid, "postgres", timeout=5)
    else:
        log("postgres is not running")
    # A cluster outside DIR (the /tmp fallback) is removed here; DIR/data goes with DIR.
    if not str(data).startswith(str(d) + os.sep) and data.name.startswith("ferry-pg-"):
        shutil.rmtree(data, ignore_errors=True)


# ---------------------------------------------------------------- users


def cmd_register_user(a):
    env = read_json(Path(a.dir).resolve() / "env.json")
    hs = env["hs_url"]
    secret = env["registration_shared_secret"]
    status, body = http("GET", f"{hs}/_synapse/admin/v1/register")
    if status != 200 or not isinstance(body, dict) or "nonce" not in body:
        raise HarnessError(f"GET /_synapse/admin/v1/register: HTTP {status}: {body}")
    nonce = body["nonce"]
    msg = b"\0".join([nonce.encode(), a.user.encode(), a.password.encode(),
                      b"admin" if a.admin else b"notadmin"])
    mac = hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()
    status, body = http("POST", f"{hs}/_synapse/admin/v1/register", {
        "nonce": nonce, "username": a.user, "password": a.password, "admin": a.admin, "mac": mac})
    if status == 200:
        out = body
    elif isinstance(body, dict) and body.get("errcode") == "M_USER_IN_USE":
        status, body = http("POST", f"{hs}/_matrix/client/v3/login", {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": a.user},
            "password": a.password})
        if status != 200:
            raise HarnessError(f"user {a.user} exists and password login failed: HTTP {status}: {body}")
        out = body
    else:
        raise HarnessError(f"registering {a.user}: HTTP {status}: {body}")
    print(json.dumps({"user_id": out["user_id"], "access_token": out["access_token"],
                      "device_id": out.get("device_id")}))


# ---------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("synapse-up", help="install (if needed) and start Synapse")
    p.add_argument("--dir", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--registrations", nargs="+", default=[], metavar="FILE")
    p.add_argument("--slots", type=int, default=0, metavar="N")
    p.add_argument("--slots-dir", metavar="SLOTDIR")
    p.set_defaults(fn=cmd_synapse_up)

    p = sub.add_parser("synapse-down", help="stop Synapse started with --dir")
    p.add_argument("--dir", required=True)
    p.set_defaults(fn=cmd_synapse_down)

    p = sub.add_parser("pg-up", help="start a throw-away PostgreSQL cluster")
    p.add_argument("--dir", required=True)
    p.add_argument("--port", required=True, type=int)
    p.set_defaults(fn=cmd_pg_up)

    p = sub.add_parser("pg-down", help="stop the cluster started with --dir")
    p.add_argument("--dir", required=True)
    p.set_defaults(fn=cmd_pg_down)

    p = sub.add_parser("register-user", help="register (or log in) a user; prints {user_id, access_token}")
    p.add_argument("--dir", required=True, help="the synapse --dir")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--admin", action="store_true")
    p.set_defaults(fn=cmd_register_user)

    a = ap.parse_args(argv)
    try:
        a.fn(a)
    except HarnessError as e:
        log(f"error ({a.cmd}): {e}")
        return 1
    except KeyboardInterrupt:
        log(f"interrupted ({a.cmd})")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
