"""Install the files cloud-init writes, for machines that have no cloud-init.

Reads {"files": [{"path", "mode", "content"}]} on stdin (docs/contracts.md) and
writes each file under /etc/runner-fleet/, atomically, with its mode, owned by
root. The whole document is checked before anything is written, so a bad
document changes nothing.

Only paths under /etc/runner-fleet/ are accepted: plain names, no `.` or `..`,
no symlinks on the way. Modes may not be executable or writable by others.

The wrapped secret_id is a single-use token: once the host has unwrapped it
(the state dir holds a secret-id), a new one would be useless and the stored
secret_id must stay, so vault/wrapped-secret-id is then left alone.

`--etc-dir` and `--state-dir` exist for tests; the paths in the document stay
/etc/runner-fleet/... and are mapped onto --etc-dir.
"""

import argparse
import json
import os
import re
import stat
import sys
import tempfile

SEED_DIR = "/etc/runner-fleet/"
WRAPPED = "vault/wrapped-secret-id"
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
MODE = re.compile(r"^0[0-7]{3}$")


class SeedError(Exception):
    pass


def _require(cond, where, msg):
    if not cond:
        raise SeedError(f"{where}: {msg}")


def validate(doc):
    """Return [(relative path, mode, content)]; raise SeedError naming the first bad key."""
    _require(isinstance(doc, dict), "seed", "must be a JSON object")
    _require(set(doc.keys()) == {"files"}, "seed", "must have exactly one key, files")
    files = doc["files"]
    _require(isinstance(files, list) and files, "files", "must be a non-empty array")
    out = []
    seen = set()
    for i, entry in enumerate(files):
        at = f"files[{i}]"
        _require(isinstance(entry, dict), at, "must be an object")
        _require(set(entry.keys()) == {"path", "mode", "content"}, at, "must have exactly path, mode and content")
        path, mode, content = entry["path"], entry["mode"], entry["content"]
        _require(isinstance(path, str) and path.startswith(SEED_DIR), f"{at}.path", f"must be under {SEED_DIR}")
        rel = path[len(SEED_DIR):]
        parts = rel.split("/")
        _require(all(p not in ("", ".", "..") for p in parts), f"{at}.path", "has an empty, . or .. component")
        _require(all(NAME.match(p) for p in parts), f"{at}.path", "may only hold letters, digits and ._-")
        _require(rel not in seen, f"{at}.path", f"{path} appears twice")
        seen.add(rel)
        _require(isinstance(mode, str) and MODE.match(mode), f"{at}.mode", "must be an octal string like 0644")
        bits = int(mode, 8)
        _require(bits & 0o133 == 0, f"{at}.mode", "may not be executable or writable by group or others")
        _require(isinstance(content, str), f"{at}.content", "must be a string")
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError:
            raise SeedError(f"{at}.content: is not valid UTF-8")
        out.append((rel, bits, data))
    return out


def _directory(etc_dir, rel):
    """The file's directory under etc_dir, created 0700 where missing; never through a symlink."""
    parent = etc_dir
    for part in rel.split("/")[:-1]:
        parent = os.path.join(parent, part)
        try:
            os.mkdir(parent, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(parent)
        _require(stat.S_ISDIR(st.st_mode), parent, "is not a directory")
    return parent


def write_atomically(path, directory, mode, content):
    """A temp file in the same directory, then rename(2): readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def seed(doc, etc_dir, state_dir, log=sys.stdout):
    files = validate(doc)
    os.makedirs(etc_dir, mode=0o755, exist_ok=True)
    _require(not os.path.islink(etc_dir), etc_dir, "is a symlink")
    # Same test as runner-fleet-bootstrap: a non-empty secret-id means it has unwrapped.
    secret_id = os.path.join(state_dir, "vault", "secret-id")
    unwrapped = os.path.isfile(secret_id) and os.path.getsize(secret_id) > 0
    for rel, mode, data in files:
        shown = SEED_DIR + rel
        if rel == WRAPPED and unwrapped:
            print(f"kept {shown}: this host has unwrapped its secret_id already", file=log)
            continue
        target = os.path.join(etc_dir, rel)
        write_atomically(target, _directory(etc_dir, rel), mode, data)
        print(f"wrote {shown} ({mode:04o})", file=log)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--etc-dir", default="/etc/runner-fleet")
    ap.add_argument("--state-dir", default="/var/lib/runner-fleet")
    args = ap.parse_args(argv)
    try:
        try:
            doc = json.load(sys.stdin)
        except json.JSONDecodeError as e:
            raise SeedError(f"seed: not JSON ({e})")
        seed(doc, args.etc_dir, args.state_dir)
    except SeedError as e:
        print(f"runner-fleet-seed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
