#!/usr/bin/env python3
"""ferry demo: a scripted conversation across the bridge, and small helpers for scripts/demo.sh.

Standard library only (Python >= 3.9). Every wait is bounded (60 s by default) and, when it
times out, prints what it saw and exits non-zero.

  demo_conversation.py [run]                      the conversation (default; see run_demo)
  demo_conversation.py configure CONFIG           set the demo's addresses in a generated config
  demo_conversation.py reset-state CONFIG         fit ferry's SQLite database to a restarted
                                                  sim server and Synapse (ferry must be stopped;
                                                  see reset_state)
  demo_conversation.py wait-http URL --what NAME [--pid PID] [--log FILE] [--any-status]
  demo_conversation.py ping --registration FILE   POST the appservice ping through Synapse

The conversation, against the running demo (Synapse on 8008, sim server on 29399, ferry):
sim users alice, bob and carol, a DM alice-bob and a group "Book club"; the Matrix user `demo`
opens a DM with the bridge bot, logs in to sim as alice, accepts the portal invites, then bob
writes from sim, demo answers from Matrix and carol writes in the group; each message is
waited for on the other side and printed with its timing.
"""

import argparse
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "demo-data"
HARNESS = REPO / "scripts" / "harness.py"

HS_URL = "http://127.0.0.1:8008"
SIM_URL = "http://127.0.0.1:29399"
FERRY_URL = "http://127.0.0.1:29318"
SERVER_NAME = "localhost"
GHOST_PREFIX = "sim_"
MATRIX_USER = "demo"
MATRIX_PASSWORD = "demo-password"

WAIT = 60.0
HTTP_TIMEOUT = 15.0

SIM_USERS = [("alice", "Alice"), ("bob", "Bob Builder"), ("carol", "Carol")]
GROUP_NAME = "Book club"
BOB_SAYS = "Hi Alice! Are you coming to book club?"
DEMO_SAYS = "Yes! I'll bring the snacks."
CAROL_SAYS = "Chapter 3 tonight"

# What the demo needs to differ from (or be sure of in) the embedded default config.
CONFIG_VALUES = {
    ("homeserver", "address"): "http://127.0.0.1:8008",
    ("homeserver", "domain"): "localhost",
    ("appservice", "address"): "http://127.0.0.1:29318",
    ("appservice", "hostname"): "127.0.0.1",
    ("appservice", "port"): "29318",
    ("database", "type"): "sqlite",
    ("networks", "sim", "enabled"): "true",
    ("networks", "sim", "server"): "http://127.0.0.1:29399",
    ("metrics", "enabled"): "true",
    ("metrics", "listen"): "127.0.0.1:9318",
    ("bridge", "permissions", "*"): "relay",
    ("bridge", "permissions", "localhost"): "user",
}

# Never route loopback requests through an http_proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
T0 = time.monotonic()


class DemoError(Exception):
    pass


def say(msg):
    print(f"  [{time.monotonic() - T0:5.1f} s] {msg}", flush=True)


def enc(s):
    return urllib.parse.quote(s, safe="")


def http(method, url, body=None, token=None, timeout=HTTP_TIMEOUT, raw=False):
    """Returns (status, parsed JSON or text). Raises DemoError when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise DemoError(f"{method} {url}: no answer ({getattr(e, 'reason', e)})")
    text = payload.decode(errors="replace")
    if raw:
        return status, text
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for(what, check, describe, timeout=WAIT, interval=0.25):
    """Polls check() until it returns something truthy; on timeout raises with describe()."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}.\nWhat I saw:\n{describe()}")
        time.sleep(interval)


def indent(text, pad="    "):
    return "\n".join(pad + line for line in str(text).splitlines()) or pad + "(nothing)"


def tail(path, lines=30):
    try:
        data = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} cannot be read)"
    return "\n".join(data[-lines:]) or f"({path} is empty)"


# ---------------------------------------------------------------- the sim server


class Sim:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def call(self, method, path, body=None, token=None, ok=(200,)):
        status, value = http(method, self.url + path, body, token)
        if status not in ok:
            raise DemoError(f"sim {method} {path}: HTTP {status}: {value}")
        return value

    def messages(self, chat):
        return self.call("GET", f"/control/chats/{enc(chat)}/messages").get("messages", [])

    def send(self, chat, sender, text):
        return self.call("POST", f"/control/chats/{enc(chat)}/messages", {"sender": sender, "text": text})

    def find_group(self, member, name, members):
        """The group `name` with `members` that already exists on this sim server, if any.

        The control API cannot list chats, so this logs in as `member` through the client API
        (the same way ferry does), lists its chats and logs that session out again."""
        flow = self.call("POST", "/v1/login/start", {"username": member})
        code = self.call("GET", f"/control/login-code/{enc(member)}")["code"]
        done = self.call("POST", "/v1/login/finish", {"flow_id": flow["flow_id"], "code": code})
        token = done["token"]
        try:
            chats = self.call("GET", "/v1/chats", token=token).get("chats", [])
        finally:
            self.call("POST", "/v1/logout", {}, token=token, ok=(200, 401))
        for chat in chats:
            ids = {m.get("id") for m in chat.get("members", [])}
            if chat.get("kind") == "group" and chat.get("name") == name and set(members) <= ids:
                return chat
        return None


# ---------------------------------------------------------------- Matrix


class Matrix:
    def __init__(self, hs, user_id, token):
        self.hs = hs.rstrip("/")
        self.user_id = user_id
        self.token = token
        self.since = None
        self.syncs = 0

    def call(self, method, path, body=None, ok=(200,)):
        status, value = http(method, self.hs + path, body, self.token)
        if status not in ok:
            raise DemoError(f"Matrix {method} {path.split('?')[0]}: HTTP {status}: {value}")
        return value

    def create_dm(self, other):
        body = {"invite": [other], "is_direct": True, "preset": "trusted_private_chat"}
        room = self.call("POST", "/_matrix/client/v3/createRoom", body)["room_id"]
        # Clients list DMs from m.direct; createRoom does not set it.
        direct = self.account_data("m.direct") or {}
        rooms = [r for r in direct.get(other, []) if r != room] + [room]
        direct[other] = rooms
        self.call("PUT", f"/_matrix/client/v3/user/{enc(self.user_id)}/account_data/m.direct", direct)
        return room

    def account_data(self, kind):
        status, value = http("GET", f"{self.hs}/_matrix/client/v3/user/{enc(self.user_id)}/account_data/{kind}",
                             token=self.token)
        if status == 404:
            return None
        if status != 200:
            raise DemoError(f"Matrix GET account data {kind}: HTTP {status}: {value}")
        return value

    def send_text(self, room, body):
        txn = secrets.token_hex(8)
        path = f"/_matrix/client/v3/rooms/{enc(room)}/send/m.room.message/{txn}"
        return self.call("PUT", path, {"msgtype": "m.text", "body": body})["event_id"]

    def messages(self, room, limit=100):
        """The newest `limit` m.room.message events of the room, oldest first."""
        path = f"/_matrix/client/v3/rooms/{enc(room)}/messages?dir=b&limit={limit}"
        chunk = self.call("GET", path).get("chunk", [])
        out = []
        for ev in reversed(chunk):
            if ev.get("type") == "m.room.message":
                content = ev.get("content", {})
                out.append({"event_id": ev.get("event_id"), "sender": ev.get("sender"),
                            "msgtype": content.get("msgtype"), "body": content.get("body", ""),
                            "ts": ev.get("origin_server_ts", 0)})
        return out

    def joined_rooms(self):
        return self.call("GET", "/_matrix/client/v3/joined_rooms").get("joined_rooms", [])

    def joined_members(self, room):
        value = self.call("GET", f"/_matrix/client/v3/rooms/{enc(room)}/joined_members", ok=(200, 403))
        return value.get("joined", {}) if isinstance(value, dict) else {}

    def sync_invites(self):
        """One /sync step; returns {room_id: inviter} of the pending invites it reports.

        Synapse caches identical /sync requests for minutes, so every request after the first
        carries the newest since token, and the long-poll timeout varies so that two polls with
        an unchanged token are not identical either."""
        filt = enc(json.dumps({"room": {"timeline": {"limit": 1}}, "presence": {"types": []}}))
        self.syncs += 1
        path = f"/_matrix/client/v3/sync?filter={filt}&timeout={500 + self.syncs}"
        if self.since:
            path += f"&since={enc(self.since)}"
        value = self.call("GET", path)
        self.since = value.get("next_batch") or self.since
        invites = {}
        for room, data in (value.get("rooms", {}).get("invite", {}) or {}).items():
            inviter = None
            for ev in data.get("invite_state", {}).get("events", []):
                if ev.get("type") == "m.room.member" and ev.get("state_key") == self.user_id:
                    inviter = ev.get("sender")
            invites[room] = inviter
        return invites

    def join(self, room):
        self.call("POST", f"/_matrix/client/v3/join/{enc(room)}", {})


def matrix_user(hs):
    """Registers `demo` (or logs in when it exists); reuses a still valid cached token."""
    cache = DATA / "demo-user.json"
    try:
        cached = json.loads(cache.read_text())
        status, who = http("GET", f"{hs}/_matrix/client/v3/account/whoami", token=cached["access_token"])
        if status == 200 and who.get("user_id") == cached["user_id"]:
            return Matrix(hs, cached["user_id"], cached["access_token"]), "logged in (cached token)"
    except (OSError, ValueError, KeyError):
        pass
    status, _ = http("GET", f"{hs}/_matrix/client/v3/profile/{enc(f'@{MATRIX_USER}:{SERVER_NAME}')}")
    how = "logged in (the user exists)" if status == 200 else "registered"
    cmd = [sys.executable, str(HARNESS), "register-user", "--dir", str(DATA / "synapse"),
           "--user", MATRIX_USER, "--password", MATRIX_PASSWORD]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
    except subprocess.TimeoutExpired:
        raise DemoError("harness.py register-user did not finish within 60 s")
    if p.returncode != 0:
        raise DemoError(f"harness.py register-user failed (exit {p.returncode}):\n{indent(p.stderr)}")
    try:
        out = json.loads(p.stdout)
    except ValueError:
        raise DemoError(f"harness.py register-user printed no JSON:\n{indent(p.stdout)}\n{indent(p.stderr)}")
    fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(out, f)
    return Matrix(hs, out["user_id"], out["access_token"]), how


def show_room(mx, room, limit=15):
    try:
        msgs = mx.messages(room)[-limit:]
    except DemoError as e:
        return f"(cannot read {room}: {e})"
    lines = [f"{m['sender']} [{m['msgtype']}]: {m['body']}" for m in msgs]
    return indent("\n".join(lines) if lines else f"(no messages in {room})")


def bot_reply(mx, room, bot, event_id, expect, timeout=WAIT):
    """Waits for the bot's notice after `event_id` that contains `expect`; fails fast on errors."""
    refusals = ("failed", "Unknown", "permission", "Try again", "already bridged", "Cannot")

    def check():
        msgs = mx.messages(room)
        ids = [m["event_id"] for m in msgs]
        if event_id not in ids:
            return None
        for m in msgs[ids.index(event_id) + 1:]:
            if m["sender"] != bot or m["msgtype"] != "m.notice":
                continue
            if expect in m["body"]:
                return m["body"]
            if any(r in m["body"] for r in refusals):
                raise DemoError(f"the bot answered:\n{indent(m['body'])}")
        return None

    return wait_for(f"the bot's answer containing {expect!r}", check,
                    lambda: show_room(mx, room), timeout=timeout)


def command(mx, room, bot, text, expect, timeout=WAIT):
    event_id = mx.send_text(room, text)
    body = bot_reply(mx, room, bot, event_id, expect, timeout)
    say(f"{text!r:12} -> bot: {body.splitlines()[0]}")
    return body


def new_management_room(mx, bot):
    room = mx.create_dm(bot)

    def welcomed():
        for m in mx.messages(room):
            if m["sender"] == bot and m["msgtype"] == "m.notice":
                return m["body"]
        return None

    body = wait_for(f"the bot's welcome in the new DM {room}", welcomed, lambda: show_room(mx, room))
    if "management room" not in body:
        raise DemoError(
            f"the bot joined {room} but did not make it the management room:\n{indent(body)}\n"
            "ferry already knows another management room for this user that the demo cannot find "
            "(was demo-data/ferry.db replaced?). Start over with: scripts/demo-down.sh --wipe && scripts/demo.sh")
    say(f"management room {room} created; the bot says: {body.splitlines()[0]}")
    return room


def existing_management_room(mx, bot):
    direct = mx.account_data("m.direct") or {}
    for room in reversed(direct.get(bot, [])):
        members = mx.joined_members(room)
        if mx.user_id in members and bot in members:
            return room
    return None


def find_portals(mx, bot, bob, carol, exclude):
    """Accepts invites from the bridge; returns (dm_room, group_room) once both are joined."""
    state = {"joined": [], "rooms": {}}

    def check():
        for room, inviter in mx.sync_invites().items():
            if inviter == bot or (inviter or "").startswith(f"@{GHOST_PREFIX}"):
                mx.join(room)
                state["joined"].append(room)
        dms, groups = [], []
        state["rooms"] = {}
        for room in mx.joined_rooms():
            if room in exclude:
                continue
            members = mx.joined_members(room)
            state["rooms"][room] = sorted(members)
            if mx.user_id not in members or bob not in members:
                continue
            (groups if carol in members else dms).append(room)
        if dms and groups:
            # Newly joined rooms first: if old rooms linger, the fresh portal wins.
            dms.sort(key=lambda r: r not in state["joined"])
            groups.sort(key=lambda r: r not in state["joined"])
            return dms[0], groups[0]
        return None

    def describe():
        lines = [f"joined rooms (other than the management room) and their members:"]
        lines += [f"  {r}: {', '.join(m)}" for r, m in state["rooms"].items()] or ["  (none)"]
        lines.append(f"invites accepted in this wait: {state['joined'] or 'none'}")
        return indent("\n".join(lines))

    return wait_for(f"portal rooms: a DM with {bob} and a group with {bob} and {carol}", check, describe,
                    interval=0.1)


def wait_matrix_message(mx, room, sender, body, before, what):
    def check():
        for m in mx.messages(room, limit=30):
            if m["event_id"] not in before and m["sender"] == sender and m["body"] == body:
                return m
        return None

    return wait_for(what, check, lambda: show_room(mx, room), interval=0.1)


def wait_sim_message(sim, mx, chat, room, sender, text, before, what):
    def check():
        for m in sim.messages(chat):
            if m["id"] not in before and m["sender"] == sender and m["text"] == text:
                return m
        for m in mx.messages(room, limit=10):
            if m["msgtype"] == "m.notice" and "not bridged" in m["body"]:
                raise DemoError(f"ferry refused the message: {m['body']}")
        return None

    def describe():
        msgs = sim.messages(chat)[-15:]
        return indent("\n".join(f"{m['sender']}: {m['text']}" for m in msgs) or f"(no messages in {chat})") \
            + f"\n  Matrix room {room}:\n" + show_room(mx, room)

    return wait_for(what, check, describe, interval=0.1)


def read_registration(path):
    text = Path(path).read_text()
    values = {}
    for key in ("id", "as_token", "sender_localpart"):
        m = re.search(rf"^{key}:\s*['\"]?([^'\"\s]+)", text, re.M)
        if m:
            values[key] = m.group(1)
    if "as_token" not in values or "id" not in values:
        raise DemoError(f"{path} has no id or as_token")
    return values


def run_demo(a):
    sim = Sim(a.sim)
    reg = read_registration(a.registration)
    bot = f"@{reg.get('sender_localpart', 'ferrybot')}:{SERVER_NAME}"
    bob, carol = f"@{GHOST_PREFIX}bob:{SERVER_NAME}", f"@{GHOST_PREFIX}carol:{SERVER_NAME}"
    names = dict(SIM_USERS)

    print("ferry demo: setting up", flush=True)
    for name, url in (("Synapse", f"{a.hs}/health"), ("ferry", f"{a.ferry}/health")):
        status, body = http("GET", url, raw=True)
        if status != 200:
            raise DemoError(f"{name} is not healthy: GET {url} answered HTTP {status}: {body[:200]}")
    for uid, name in SIM_USERS:
        sim.call("POST", "/control/users", {"id": uid, "name": name})
    dm_chat = sim.call("POST", "/control/dms", {"a": "alice", "b": "bob"})["id"]
    group = sim.find_group("alice", GROUP_NAME, ["alice", "bob", "carol"])
    how = "exists"
    if group is None:
        group = sim.call("POST", "/control/groups", {"name": GROUP_NAME, "members": ["alice", "bob", "carol"]})
        how = "created"
    group_chat = group["id"]
    say(f'sim: users alice, bob, carol; DM alice-bob is {dm_chat}; group "{GROUP_NAME}" is {group_chat} ({how})')

    mx, how = matrix_user(a.hs)
    say(f"Matrix user {mx.user_id} {how}")
    leave_stale_rooms(mx)

    room = existing_management_room(mx, bot)
    if room:
        say(f"management room {room} (the existing DM with {bot})")
        try:
            command(mx, room, bot, "login sim", "username", timeout=20)
        except DemoError as e:
            if "timed out" not in str(e):
                raise
            say(f"the bot does not answer in {room}; opening a new DM with it")
            room = new_management_room(mx, bot)
            command(mx, room, bot, "login sim", "username")
    else:
        room = new_management_room(mx, bot)
        command(mx, room, bot, "login sim", "username")
    command(mx, room, bot, "alice", "code")
    code = sim.call("GET", "/control/login-code/alice")["code"]
    command(mx, room, bot, code, "Logged in")
    command(mx, room, bot, "sync", "syncing")

    dm_room, group_room = find_portals(mx, bot, bob, carol, exclude={room})
    say(f'portals joined: the DM with bob {dm_room}, "{GROUP_NAME}" {group_room}')

    state = {"management_room": room, "dm_chat": dm_chat, "group_chat": group_chat,
             "dm_room": dm_room, "group_room": group_room, "user_id": mx.user_id, "bot": bot}
    (DATA / "demo-state.json").write_text(json.dumps(state, indent=2) + "\n")

    print("\nThe conversation, as it crossed the bridge:", flush=True)

    def line(direction, who, text, seconds, note):
        print(f"  [{direction}] {who}: {text}\n        {seconds:.2f} s, {note}", flush=True)

    # bob (sim) -> Matrix
    before = {m["event_id"] for m in mx.messages(dm_room, limit=30)}
    sent = sim.send(dm_chat, "bob", BOB_SAYS)
    got = wait_matrix_message(mx, dm_room, bob, BOB_SAYS, before,
                              f"bob's message in the DM portal {dm_room} from {bob}")
    line("sim → Matrix", names["bob"], BOB_SAYS, (got["ts"] - sent["ts"]) / 1000,
         f"in {dm_room} from {bob}")

    # demo (Matrix) -> alice on sim
    before = {m["id"] for m in sim.messages(dm_chat)}
    event_id = mx.send_text(dm_room, DEMO_SAYS)
    ev_ts = next((m["ts"] for m in mx.messages(dm_room, limit=10) if m["event_id"] == event_id), None)
    got = wait_sim_message(sim, mx, dm_chat, dm_room, "alice", DEMO_SAYS, before,
                           f"alice's message in sim chat {dm_chat}")
    took = (got["ts"] - ev_ts) / 1000 if ev_ts else float("nan")
    line("Matrix → sim", f"{MATRIX_USER} (as alice)", DEMO_SAYS, took, f"as {got['id']} in sim chat {dm_chat}")

    # carol (sim group) -> Matrix
    before = {m["event_id"] for m in mx.messages(group_room, limit=30)}
    sent = sim.send(group_chat, "carol", CAROL_SAYS)
    got = wait_matrix_message(mx, group_room, carol, CAROL_SAYS, before,
                              f"carol's message in the group portal {group_room} from {carol}")
    line("sim → Matrix", f'{names["carol"]} in "{GROUP_NAME}"', CAROL_SAYS, (got["ts"] - sent["ts"]) / 1000,
         f"in {group_room} from {carol}")
    print(f"\nConversation done in {time.monotonic() - T0:.1f} s.", flush=True)


# ---------------------------------------------------------------- helpers for demo.sh


def yaml_scalar(text):
    """The value part of `key: value  # comment`, unquoted."""
    text = text.strip()
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        return text[1:end] if end > 0 else text[1:]
    return text.split(" #", 1)[0].strip()


def configure(a):
    """Sets CONFIG_VALUES in a generated (block-style) config; prints what changed."""
    path = Path(a.config)
    lines = path.read_text().splitlines()
    key_re = re.compile(r'^( *)("[^"]*"|\'[^\']*\'|[^\s#:"\'][^:#]*?):(?:\s+(.*))?$')
    stack = []  # (indent, key) of the mappings enclosing the current line
    found = {}  # key path -> (line index, indent, key as written, value text)
    mappings = {}  # key path of a mapping -> [line index of its key, indent of its children]
    for i, line in enumerate(lines):
        m = key_re.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        ind, key, rest = len(m.group(1)), m.group(2).strip("\"'"), m.group(3) or ""
        while stack and stack[-1][0] >= ind:
            stack.pop()
        parent = tuple(k for _, k in stack)
        if parent in mappings and mappings[parent][1] is None:
            mappings[parent][1] = ind
        keypath = parent + (key,)
        if rest.strip() == "" or rest.strip().startswith("#"):
            stack.append((ind, key))
            mappings[keypath] = [i, None]
        else:
            found[keypath] = (i, ind, m.group(2), rest)
    changes, inserts = [], []
    for keypath, want in CONFIG_VALUES.items():
        shown = ".".join(keypath)
        if keypath in found:
            i, ind, raw_key, rest = found[keypath]
            if yaml_scalar(rest) != want:
                lines[i] = f"{' ' * ind}{raw_key}: {want}"
                changes.append(f"{shown}: {yaml_scalar(rest)} -> {want}")
        elif keypath[:-1] in mappings:
            pi, child_ind = mappings[keypath[:-1]]
            key = keypath[-1]
            key = f'"{key}"' if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", key) else key
            inserts.append((pi, f"{' ' * (child_ind or 2 * len(keypath[:-1]))}{key}: {want}"))
            changes.append(f"{shown}: (absent) -> {want}")
        else:
            raise DemoError(f"{path}: no mapping {'.'.join(keypath[:-1])} to put {shown} in")
    for pi, text in sorted(inserts, reverse=True):
        lines.insert(pi + 1, text)
    m = re.search(r"^\s*uri:\s*['\"]?(sqlite:[^'\"\s]*)", "\n".join(lines), re.M)
    if not m:
        raise DemoError(f"{path}: database.uri is not a sqlite: URI")
    if changes:
        path.write_text("\n".join(lines) + "\n")
        print("changed from the embedded defaults: " + "; ".join(changes))
    else:
        print("the embedded defaults already fit the demo; nothing changed")


def sqlite_path(config):
    """The SQLite file of `config`; relative paths are relative to the config's directory
    (demo.sh runs ferry there)."""
    text = Path(config).read_text()
    m = re.search(r"^\s*uri:\s*['\"]?sqlite:(?://)?([^'\"\s?]+)", text, re.M)
    if not m:
        raise DemoError(f"{config}: no sqlite database.uri")
    p = Path(m.group(1))
    return p if p.is_absolute() else Path(config).resolve().parent / p


# The portals a new sim server gets back under the same chat ids: the conversation creates the
# DM alice-bob first (c1) and then the group (c2) on a fresh server. (chat_id, kind, receiver
# or group name.)
REUSED_PORTALS = {("c1", "dm", "alice"), ("c2", "group", GROUP_NAME)}
STALE_ROOMS = DATA / "stale-rooms.json"


def reset_state(a):
    """Makes ferry's database fit the freshly restarted sim server and Synapse (ferry stopped).

    - The sim server keeps its world in memory only, and a new one reuses ids (c1, m1, event
      seq 1): forget what ferry remembers of the previous one (logins with their checkpoints,
      message id mappings, and the portals of chats that will not come back under the same
      id: their rooms go to demo-data/stale-rooms.json, which the conversation leaves). The
      DM with bob, "Book club", the ghosts and the management room stay, so those rooms are
      reused once alice logs in again.
    - Synapse on SQLite numbers appservice transactions from 1 again after a restart, while
      ferry remembers the transaction ids it has seen (for 7 days) and would answer the new
      transactions as repeats without handling them: forget those ids too."""
    db_path = sqlite_path(a.config)
    if not db_path.exists():
        print(f"no {db_path} yet; nothing to reset")
        return
    try:
        db = sqlite3.connect(str(db_path), timeout=10)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"remote_login", "message", "portal", "as_txn"} <= tables:
            raise sqlite3.DatabaseError(
                f"tables remote_login, message, portal and as_txn expected, found {sorted(tables)}")
        counts = {}
        stale = []
        with db:
            for table in ("reaction", "message", "remote_login"):
                if table in tables:
                    counts[table] = db.execute(f"DELETE FROM {table} WHERE network = 'sim'").rowcount
            rows = db.execute("SELECT chat_id, kind, receiver, name, room_id FROM portal WHERE network = 'sim'")
            for chat_id, kind, receiver, name, room_id in rows.fetchall():
                if (chat_id, kind, receiver if kind == "dm" else name) in REUSED_PORTALS:
                    continue
                db.execute("DELETE FROM portal WHERE network = 'sim' AND chat_id = ? AND receiver = ?",
                           (chat_id, receiver))
                if room_id:
                    stale.append(room_id)
            counts["as_txn"] = db.execute("DELETE FROM as_txn").rowcount
        db.close()
    except sqlite3.Error as e:
        raise DemoError(f"cannot reset the bridge state in {db_path}: {e}\n"
                        "Start over with: scripts/demo-down.sh --wipe && scripts/demo.sh")
    if stale:
        try:
            stale = json.loads(STALE_ROOMS.read_text()) + stale
        except (OSError, ValueError):
            pass
        STALE_ROOMS.write_text(json.dumps(stale) + "\n")
    print(f"ferry's database: forgot {counts.get('remote_login', 0)} sim logins, "
          f"{counts.get('message', 0)} message mappings and {len(stale)} other portal(s) of the previous "
          f"sim server, and {counts['as_txn']} transaction ids of the previous Synapse run")


def leave_stale_rooms(mx):
    """Leaves (and forgets) the rooms of chats that ended with a previous sim server."""
    try:
        rooms = json.loads(STALE_ROOMS.read_text())
    except (OSError, ValueError):
        return
    for room in rooms:
        mx.call("POST", f"/_matrix/client/v3/rooms/{enc(room)}/leave", {}, ok=(200, 403, 404))
        mx.call("POST", f"/_matrix/client/v3/rooms/{enc(room)}/forget", {}, ok=(200, 400, 403, 404))
    STALE_ROOMS.unlink()
    say(f"left {len(rooms)} portal room{'s' if len(rooms) != 1 else ''} of chats that ended "
        "with the previous sim server")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except ProcessLookupError:
        return False
    except (OSError, IndexError):
        return True


def wait_http(a):
    t0 = time.monotonic()
    seen = {"last": "nothing yet"}

    def check():
        if a.pid and not pid_alive(a.pid):
            raise DemoError(f"{a.what} (pid {a.pid}) exited during start-up"
                            + (f"\n--- {a.log} (tail) ---\n{tail(a.log)}" if a.log else ""))
        try:
            status, body = http("GET", a.url, timeout=2, raw=True)
        except DemoError as e:
            seen["last"] = str(e)
            return None
        seen["last"] = f"HTTP {status}: {body[:200]}"
        return a.any_status or 200 <= status < 300

    try:
        wait_for(f"{a.what} to answer {a.url}", check,
                 lambda: f"    last attempt: {seen['last']}"
                 + (f"\n--- {a.log} (tail) ---\n{tail(a.log)}" if a.log else ""),
                 timeout=a.timeout, interval=0.1)
    except DemoError:
        raise
    print(f"{a.what} answers {a.url} ({time.monotonic() - t0:.1f} s)")


def ping(a):
    reg = read_registration(a.registration)
    url = f"{a.hs.rstrip('/')}/_matrix/client/v1/appservice/{enc(reg['id'])}/ping"
    deadline = time.monotonic() + a.timeout
    while True:
        status, body = http("POST", url, {"transaction_id": f"demo-{secrets.token_hex(8)}"}, reg["as_token"])
        if status == 200:
            print(f"Synapse reaches ferry (appservice ping: {body.get('duration_ms', '?')} ms)")
            return
        if time.monotonic() > deadline:
            raise DemoError(f"appservice ping through Synapse failed: HTTP {status}: {body}")
        time.sleep(0.5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")

    def run_args(p):
        p.add_argument("--hs", default=HS_URL)
        p.add_argument("--sim", default=SIM_URL)
        p.add_argument("--ferry", default=FERRY_URL, help="ferry's appservice address (for /health)")
        p.add_argument("--registration", default=str(DATA / "registration.yaml"))
        p.set_defaults(fn=run_demo)

    run_args(ap)
    run_args(sub.add_parser("run", help="the conversation (default)"))
    p = sub.add_parser("configure", help="set the demo's values in a generated config")
    p.add_argument("config")
    p.set_defaults(fn=configure)
    p = sub.add_parser("reset-state", help="fit ferry's database to the restarted sim server and Synapse")
    p.add_argument("config")
    p.set_defaults(fn=reset_state)
    p = sub.add_parser("wait-http", help="wait until a URL answers")
    p.add_argument("url")
    p.add_argument("--what", required=True)
    p.add_argument("--pid", type=int)
    p.add_argument("--log")
    p.add_argument("--timeout", type=float, default=WAIT)
    p.add_argument("--any-status", action="store_true", help="any HTTP answer counts, not only 2xx")
    p.set_defaults(fn=wait_http)
    p = sub.add_parser("ping", help="POST the appservice ping through Synapse")
    p.add_argument("--registration", required=True)
    p.add_argument("--hs", default=HS_URL)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(fn=ping)

    a = ap.parse_args(argv)
    try:
        a.fn(a)
    except DemoError as e:
        print(f"demo: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
