#!/usr/bin/env python3
"""Starts `kihon4 migrate`, `api` and `worker` exactly as the systemd units
(infra/systemd) and the Kubernetes manifests (infra/kubernetes) say: the same
program and arguments, the same variables with the same values, but for the
site's own ones (the database, the provider, the mail relay, where the API
listens), which are replaced and printed, and the paths of mounted files,
which point at a temporary folder holding the same files. Each runs as an
unprivileged user. Checks that `migrate` ends with 0, that `api` answers
/healthz, /readyz and /metrics, that `worker` starts, and that each stops
with 0 on SIGTERM within its grace period (TimeoutStopSec=,
terminationGracePeriodSeconds). Exit status 1 names every failure.

Used by infra/dev/deployment-check; standard library only.

  deployment-processes.py --bin KIHON4 --database-url URL [--user NAME]
"""

import argparse
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = []


def say(msg):
    print(f"deployment-processes: {msg}", flush=True)


def fail(msg):
    failures.append(msg)
    print(f"deployment-processes: FAILED: {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- what the files say -------------------------------------------------------------------------

def parse_unit(path):
    """The [Service] settings of a unit file, each a list (settings repeat)."""
    settings, section = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section == "Service" and "=" in line:
                key, value = line.split("=", 1)
                settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def parse_env_file(path):
    env = {}
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            key, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    return env


def load_yaml_documents(path):
    """The manifests' documents, through the venv's PyYAML (yamllint's)."""
    import yaml  # noqa: PLC0415 (only the venv has it)
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# --- running ------------------------------------------------------------------------------------

class Runner:
    def __init__(self, bin_path, user):
        self.bin = bin_path
        self.user = user

    def prefix(self):
        if os.getuid() != 0:
            return []
        pw = pwd.getpwnam(self.user)
        return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"]

    def start(self, argv, env, log):
        out = open(log, "wb")
        return subprocess.Popen(self.prefix() + argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd="/")

    def chown(self, *paths):
        if os.getuid() != 0:
            return
        pw = pwd.getpwnam(self.user)
        for p in paths:
            for dirpath, dirs, files in os.walk(p):
                os.chown(dirpath, pw.pw_uid, pw.pw_gid)
                for name in files:
                    os.chown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_until(check, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def tail(log, n=15):
    try:
        with open(log, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def stop(name, proc, grace, log):
    """SIGTERM, then the exit code within `grace` seconds."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        fail(f"{name} did not stop within {grace} s of SIGTERM; its log:\n{tail(log)}")
        return
    took = time.monotonic() - started
    if code != 0:
        fail(f"{name} exited {code} after SIGTERM; its log:\n{tail(log)}")
    else:
        say(f"{name}: stopped with 0 on SIGTERM in {took:.2f} s (grace {grace} s)")


def grace_of_unit(unit):
    value = unit.get("TimeoutStopSec", ["90"])[-1]
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    if not m:
        raise ValueError(f"TimeoutStopSec={value}")
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def exercise(label, runner, commands, tmp):
    """commands: (name, argv, env, grace, kind) with kind migrate|api|worker; migrate first."""
    procs = []
    for name, argv, env, grace, kind in commands:
        log = os.path.join(tmp, re.sub(r"[^A-Za-z0-9@.-]", "_", f"{label}-{name}") + ".log")
        if kind == "migrate":
            proc = runner.start(argv, env, log)
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "no exit within 120 s"
            if code != 0 or "the schema is current" not in tail(log, 50):
                fail(f"{label} {name}: exited {code}; its log:\n{tail(log)}")
                return
            say(f"{label} {name}: {argv[-1]} applied the migrations and exited 0")
            continue
        proc = runner.start(argv, env, log)
        procs.append((name, proc, grace, log))
        if kind == "api":
            base = "http://" + env["KIHON4_LISTEN"]
            ok = wait_until(lambda: proc.poll() is not None or http_status(base + "/readyz") == 200, 60)
            if proc.poll() is not None or not ok:
                fail(f"{label} {name}: /readyz did not answer 200; its log:\n{tail(log)}")
                continue
            for route in ("/healthz", "/readyz", "/metrics"):
                status = http_status(base + route)
                if status != 200:
                    fail(f"{label} {name}: {route} answered {status}")
            say(f"{label} {name}: /healthz, /readyz and /metrics answer 200 on {env['KIHON4_LISTEN']}")
        else:
            ok = wait_until(lambda: proc.poll() is not None or "worker started" in tail(log, 100), 60)
            if proc.poll() is not None or not ok:
                fail(f"{label} {name}: the worker did not start; its log:\n{tail(log)}")
                continue
            say(f"{label} {name}: the worker started")
    # Let them run together for a moment: schedules, loops, the provider.
    time.sleep(3)
    for name, proc, grace, log in procs:
        if proc.poll() is not None:
            fail(f"{label} {name}: exited {proc.returncode} while running; its log:\n{tail(log)}")
            continue
        stop(f"{label} {name}", proc, grace, log)


# --- the two sources ----------------------------------------------------------------------------

def systemd_commands(args, site, files):
    """The units' ExecStart=, Environment= and EnvironmentFile=, with systemd's specifiers and the
    files under /etc/kihon4 pointed at the temporary folder."""
    state = os.path.join(files["root"], "state")
    creds = os.path.join(files["root"], "credentials")
    os.makedirs(os.path.join(state, "kihon4"), mode=0o700)
    etc = files["etc"]
    env_file_example = os.path.join(ROOT, "infra/systemd/kihon4.env.example")

    def localise(value):
        value = value.replace("%S", state).replace("%d", creds)
        value = value.replace("/etc/kihon4/", etc + "/")
        return value

    commands = []
    for unit_name, kind in (("kihon4-migrate.service", "migrate"), ("kihon4-api.service", "api"),
                            ("kihon4-worker.service", "worker"), ("kihon4-worker@.service", "worker")):
        unit = parse_unit(os.path.join(ROOT, "infra/systemd", unit_name))
        env = {}
        for path in unit.get("EnvironmentFile", []):
            if path != "/etc/kihon4/kihon4.env":
                fail(f"{unit_name}: EnvironmentFile={path}, not /etc/kihon4/kihon4.env")
            env.update(parse_env_file(env_file_example))
        for item in unit.get("Environment", []):
            for pair in shlex.split(item):
                key, value = pair.split("=", 1)
                env[key] = value
        env = {k: localise(v) for k, v in env.items()}
        # LoadCredential=NAME:PATH puts PATH at %d/NAME, readable by the service only.
        for item in unit.get("LoadCredential", []):
            name, path = item.split(":", 1)
            target = os.path.join(creds, name)
            if not os.path.exists(target):
                shutil.copyfile(localise(path), target)
        argv = shlex.split(unit["ExecStart"][-1])
        if argv[0] != "/usr/local/bin/kihon4":
            fail(f"{unit_name}: ExecStart runs {argv[0]}, not /usr/local/bin/kihon4")
        argv[0] = args.bin
        env.update(site(kind))
        grace = grace_of_unit(unit) if kind != "migrate" else None
        commands.append((unit_name, argv, env, grace, kind))
    files["readonly"].append(creds)
    return commands


def kubernetes_commands(args, site, files):
    """The Deployments' and the Job's command, args, env and envFrom (the ConfigMap's data, the
    Secret's keys), with each volumeMount's path pointed at a folder holding what it mounts."""
    k8s = os.path.join(ROOT, "infra/kubernetes")
    config = next(d for d in load_yaml_documents(os.path.join(k8s, "base/configmap.yaml"))
                  if d["kind"] == "ConfigMap")
    root = files["root"]
    volumes_content = {
        # What each volume holds in the test: the Secret or ConfigMap the manifests name.
        "audit-key": files["audit"],
        "jwt-keys": files["jwt"],
        "trust-anchors": files["anchors"],
    }
    commands = []
    for path, kind_wanted, kind in (("migrate/job.yaml", "Job", "migrate"), ("api.yaml", "Deployment", "api"),
                                    ("worker.yaml", "Deployment", "worker")):
        doc = next(d for d in load_yaml_documents(os.path.join(k8s, path)) if d["kind"] == kind_wanted)
        spec = doc["spec"]["template"]["spec"]
        container = spec["containers"][0]
        name = f"{path}:{container['name']}"
        mounts = {}
        for mount in container.get("volumeMounts", []):
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            if "emptyDir" in volume:
                folder = os.path.join(root, f"{container['name']}-{mount['name']}")
                os.makedirs(folder, mode=0o700)
                files["writable"].append(folder)
            else:
                folder = volumes_content[mount["name"]]
            if not mount.get("readOnly") and "emptyDir" not in volume:
                fail(f"{name}: {mount['mountPath']} is mounted writable")
            mounts[mount["mountPath"]] = folder

        def localise(value):
            for mount_path, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == mount_path or value.startswith(mount_path + "/"):
                    return folder + value[len(mount_path):]
            return value

        env = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                if source["configMapRef"]["name"] != config["metadata"]["name"]:
                    fail(f"{name}: envFrom names ConfigMap {source['configMapRef']['name']}")
                env.update({k: str(v) for k, v in config["data"].items()})
            elif "secretRef" in source:
                # The Secret kihon4-secrets: its keys are variables (docs/deployment.md).
                env.update({"KIHON4_DATABASE_URL": "-", "KIHON4_PROVIDER_API_KEY": "-", "KIHON4_SMTP_URL": "-"})
        for item in container.get("env", []):
            env[item["name"]] = str(item["value"])
        env = {k: localise(v) for k, v in env.items()}
        argv = container["command"] + container.get("args", [])
        if argv[0] != "/usr/local/bin/kihon4":
            fail(f"{name}: the command is {argv[0]}, not /usr/local/bin/kihon4")
        argv[0] = args.bin
        env.update(site(kind))
        grace = spec.get("terminationGracePeriodSeconds", 30)
        commands.append((name, argv, env, grace, kind))
        if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            fail(f"{name}: readOnlyRootFilesystem is not true")
    return commands


# --- main ---------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server's URL (its database is replaced)")
    parser.add_argument("--psql", default="psql")
    parser.add_argument("--user", default="kihon4test")
    args = parser.parse_args()
    args.bin = os.path.abspath(args.bin)

    if os.getuid() == 0:
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", args.user],
                           check=True)
    runner = Runner(args.bin, args.user)
    tmp = tempfile.mkdtemp(prefix="kihon4-deploy.")
    os.chmod(tmp, 0o755)
    procs = []
    databases = []
    try:
        # The simulator, standing in for the provider (its CA the trust anchor).
        sim_port = free_port()
        sim_dir = os.path.join(tmp, "sim")
        os.makedirs(sim_dir)
        runner.chown(sim_dir)
        sim_key = "deployment-check-provider-key"
        sim = runner.start([args.bin, "sim", "--listen", f"127.0.0.1:{sim_port}", "--data-dir", sim_dir,
                            "--api-key", sim_key], {}, os.path.join(tmp, "sim.log"))
        procs.append(sim)
        if not wait_until(lambda: os.path.exists(os.path.join(sim_dir, "ca.pem"))
                          and http_status(f"http://127.0.0.1:{sim_port}/v1/ca") == 200, 60):
            fail(f"the simulator did not start:\n{tail(os.path.join(tmp, 'sim.log'))}")
            return

        for label, build in (("systemd", systemd_commands), ("kubernetes", kubernetes_commands)):
            root = os.path.join(tmp, label)
            etc = os.path.join(root, "etc-kihon4")
            files = {"root": root, "etc": etc, "readonly": [], "writable": [],
                     "audit": os.path.join(etc, "audit"), "jwt": os.path.join(etc, "jwt"),
                     "anchors": os.path.join(etc, "trust-anchors")}
            for d in (files["audit"], files["jwt"], files["anchors"], os.path.join(root, "credentials")):
                os.makedirs(d)
            # The files an operator puts in place: the audit signing key (made once), the identity
            # provider's public key, the J-LIS CA certificates.
            subprocess.run([args.bin, "audit", "init-key", "--out", os.path.join(files["audit"], "audit-signing-key.pem")],
                           check=True, env={"KIHON4_DATA_DIR": os.path.join(root, "init-key")}, cwd=root,
                           stdout=subprocess.DEVNULL)
            for name in ("audit-signing-key.pem", "audit-signing-key.pem.pub"):
                shutil.copyfile(os.path.join(files["audit"], name), os.path.join(etc, name))
            subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                            os.path.join(root, "idp-key.pem")], check=True)
            subprocess.run(["openssl", "ec", "-in", os.path.join(root, "idp-key.pem"), "-pubout", "-out",
                            os.path.join(files["jwt"], "idp.pem")], check=True, stderr=subprocess.DEVNULL)
            shutil.copyfile(os.path.join(sim_dir, "ca.pem"), os.path.join(files["anchors"], "jlis-ca.pem"))

            database = f"kihon4_deploy_{label}_{os.getpid()}"
            subprocess.run([args.psql, "-q", "-d", args.database_url, "-c", f"CREATE DATABASE {database}"],
                           check=True)
            databases.append(database)
            url = args.database_url.rsplit("/", 1)[0] + "/" + database

            def site(kind, url=url):
                # The site's own values, the same whatever the file says.
                values = {
                    "KIHON4_DATABASE_URL": url,
                    "KIHON4_PROVIDER_URL": f"http://127.0.0.1:{sim_port}/",
                    "KIHON4_PROVIDER_API_KEY": sim_key,
                    "KIHON4_SMTP_URL": f"smtp://127.0.0.1:{free_port()}",
                }
                if kind == "api":
                    values["KIHON4_LISTEN"] = f"127.0.0.1:{free_port()}"
                return values

            commands = build(args, site, files)
            runner.chown(root)
            # What is mounted read-only is read-only here too: kihon4 must not need to write there.
            for d in (files["audit"], files["jwt"], files["anchors"], *files["readonly"]):
                for name in os.listdir(d):
                    os.chmod(os.path.join(d, name), 0o400)
                os.chmod(d, 0o500)
            say(f"{label}: site values replaced: KIHON4_DATABASE_URL, KIHON4_PROVIDER_URL, "
                "KIHON4_PROVIDER_API_KEY, KIHON4_SMTP_URL, and KIHON4_LISTEN of the API; "
                f"the rest as the files say ({', '.join(sorted(k for k in commands[1][2] if k.startswith('KIHON4_')))})")
            exercise(label, runner, commands, tmp)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for database in databases:
            subprocess.run([args.psql, "-q", "-d", args.database_url, "-c", f"DROP DATABASE IF EXISTS {database}"],
                           check=False)
        if failures:
            say(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(json.dumps(failures, indent=2, ensure_ascii=False), file=sys.stderr)
        sys.exit(1)
    say("passed")


if __name__ == "__main__":
    main()
