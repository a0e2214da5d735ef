"""Check the backup layout, the cron entry, and run backup.sh as svc."""

import datetime
import grp
import os
import pwd
import re
import shlex
import stat
import subprocess
import sys
import tarfile
import time

APP = "/workspace/app"
DAY = 86400


def owner_mode(path):
    st = os.stat(path)
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def expect(path, kind, mode):
    if not (os.path.isdir(path) if kind == "dir" else os.path.isfile(path)):
        return f"{path} is not a {kind}"
    user, group, got = owner_mode(path)
    if (user, group, got) != ("svc", "svc", mode):
        return f"{path}: expected svc:svc {mode:04o}, got {user}:{group} {got:04o}"
    return None


def check_cron():
    path = f"{APP}/etc/cron.d/backup"
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return f"{path} is missing"
    jobs = [
        line.strip()
        for line in lines
        if line.strip() and not line.strip().startswith("#") and not re.match(r"^\s*[A-Za-z_]\w*\s*=", line)
    ]
    if len(jobs) != 1:
        return f"{path}: expected exactly one job line, got {len(jobs)}"
    fields = jobs[0].split(None, 6)
    if len(fields) < 7:
        return f"{path}: a system crontab line needs 5 time fields, a user and a command: {jobs[0]!r}"
    minute, hour, dom, month, dow, user, command = fields
    if not (minute.isdigit() and int(minute) == 30 and hour.isdigit() and int(hour) == 2):
        return f"{path}: job does not run at 02:30: {jobs[0]!r}"
    if (dom, month, dow) != ("*", "*", "*"):
        return f"{path}: job does not run every day: {jobs[0]!r}"
    if user != "svc":
        return f"{path}: job runs as {user!r}, not svc"
    try:
        words = shlex.split(command.replace("2>&1", " 2>&1 ").replace(">>", " >> "))
    except ValueError:
        return f"{path}: cannot parse the command {command!r}"
    runs = words[:1] == [f"{APP}/bin/backup.sh"] or words[:2] in (
        ["bash", f"{APP}/bin/backup.sh"],
        ["/bin/bash", f"{APP}/bin/backup.sh"],
        ["sh", f"{APP}/bin/backup.sh"],
        ["/bin/sh", f"{APP}/bin/backup.sh"],
    )
    if not runs:
        return f"{path}: job does not run {APP}/bin/backup.sh: {command!r}"
    log = f"{APP}/logs/backup.log"
    redirects = " ".join(words)
    if f">> {log} 2>&1" not in redirects and f"&>> {log}" not in command:
        return f"{path}: job does not append stdout and stderr to {log}: {command!r}"
    return None


def check_run():
    env_file = f"{APP}/etc/backup.env"
    text = open(env_file).read()
    if not re.search(r"^\s*(export\s+)?RETENTION_DAYS=[\"']?7[\"']?\s*$", text, re.M):
        return f"{env_file} does not set RETENTION_DAYS=7"
    # The value must be read at run time: make it 3 days for this run (writing keeps owner and mode).
    with open(env_file, "w") as fp:
        fp.write(re.sub(r"RETENTION_DAYS=[\"']?7[\"']?", "RETENTION_DAYS=3", text))
    backups = f"{APP}/backups"
    now = time.time()
    planted = {"data-20200101.tar.gz": 5, "data-20200102.tar.gz": 1, "notes.txt": 10, "data-keep.txt": 10}
    for name, age_days in planted.items():
        path = f"{backups}/{name}"
        open(path, "w").write("old\n")
        os.chown(path, pwd.getpwnam("svc").pw_uid, grp.getgrnam("svc").gr_gid)
        os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    before = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    run = subprocess.run(
        ["setpriv", "--reuid=svc", "--regid=svc", "--init-groups", "--reset-env", f"{APP}/bin/backup.sh"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    after = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    if run.returncode != 0:
        return f"backup.sh run as svc exited with {run.returncode}: {run.stderr[-400:]}"
    present = set(os.listdir(backups))
    if "data-20200101.tar.gz" in present:
        return "backup.sh did not delete a data-*.tar.gz older than RETENTION_DAYS (3 in this run)"
    for name in ("data-20200102.tar.gz", "notes.txt", "data-keep.txt"):
        if name not in present:
            return f"backup.sh deleted {name}, which it must keep"
    archive = next(
        (f"{backups}/data-{d}.tar.gz" for d in (before, after) if f"data-{d}.tar.gz" in present), None
    )
    if archive is None:
        return f"no {backups}/data-{after}.tar.gz after running backup.sh"
    if owner_mode(archive)[0] != "svc":
        return f"{archive} is not owned by svc"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name.rstrip("/"): m for m in tar.getmembers()}
            for root, _, files in os.walk(f"{APP}/data"):
                for name in files:
                    rel = os.path.relpath(os.path.join(root, name), APP)
                    member = members.get(rel) or members.get("./" + rel)
                    if member is None:
                        return f"{archive} has no member {rel}"
                    if tar.extractfile(member).read() != open(os.path.join(root, name), "rb").read():
                        return f"{archive}: {rel} differs from the data directory"
            if any(name.lstrip("./").split("/")[0] != "data" for name in members):
                return f"{archive} has members outside data/: {sorted(members)[:5]}"
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"{archive} is not a readable .tar.gz: {exc}"
    return None


def check():
    for path, kind, mode in (
        (f"{APP}/etc/backup.env", "file", 0o600),
        (f"{APP}/bin/backup.sh", "file", 0o750),
        (f"{APP}/backups", "dir", 0o700),
        (f"{APP}/logs", "dir", 0o755),
    ):
        problem = expect(path, kind, mode)
        if problem:
            return problem
    return check_cron() or check_run()


if __name__ == "__main__":
    problem = check()
    print(problem or "backup job set up correctly")
    sys.exit(1 if problem else 0)
