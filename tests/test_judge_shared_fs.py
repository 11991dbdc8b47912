"""The judge cache on a shared file system written from two "nodes" at once.

One directory is exported by a real sshd on loopback (Debian's openssh-server, a key made in
the test's temp dir) and mounted twice with sshfs (FUSE): two clients of one export, as two
cluster nodes mount one NFS export. `python -m reset.judge --provider openai` runs through each
mount at once, each under its own hostname (`unshare --uts`, then `hostname`), against the
loopback chat server, with `--cache` on its own mount of the same directory. The server counts
requests: every judgement is kept (a later run pays nothing), every common prompt is paid once,
and after `kill -9` of one node's run its finished judgements are kept and its claims lapse so
the other run finishes.

The mounts use `dir_cache=no,attr_timeout=0,entry_timeout=0`: sshfs otherwise answers stat
and readdir from its own cache for 20 s and the kernel keeps a file's size for 1 s, weaker than
the close-to-open consistency of NFS that the cache design assumes (docs/reliability.md). sshd, sshfs and the judge runs are stopped by pid, also when a test
fails; /run/sshd (sshd's privilege-separation directory) is removed again when the test made it.
The packages are installed with apt-get when missing and the test runs as root (as in CI), else
the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chat_server import ChatServer, Fault, answer_block, rating_for

from reset.judge import JudgeCache, judge_prompt

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "RESET_SHARED_FS_KEY"
PACKAGES = {"sshfs": "sshfs", "sshd": "openssh-server", "ssh-keygen": "openssh-client"}
START_TIMEOUT_S = 600   # includes apt-get on a fresh machine


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def skip_reason() -> str | None:
    if os.environ.get("RESET_SKIP_SHARED_FS"):
        return "RESET_SKIP_SHARED_FS is set"
    if not sys.platform.startswith("linux"):
        return "sshfs mounts and UTS namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root: it installs sshfs/openssh-server with apt-get, mounts FUSE and sets hostnames"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing: no FUSE here"
    for tool in ("unshare", "hostname", "timeout"):
        if not _which(tool):
            return f"`{tool}` is missing"
    missing = [pkg for binary, pkg in PACKAGES.items() if not _which(binary)]
    if missing and not shutil.which("apt-get"):
        return f"{', '.join(missing)} not installed and no apt-get to install them"
    return None


def install_missing() -> None:
    missing = sorted({pkg for binary, pkg in PACKAGES.items() if not _which(binary)})
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    out = subprocess.run(["timeout", "-s", "KILL", str(START_TIMEOUT_S), "apt-get", "install", "-y",
                          "--no-install-recommends", *missing], env=env, capture_output=True, text=True)
    if out.returncode != 0:   # a clean machine may not have package lists yet
        subprocess.run(["timeout", "-s", "KILL", "300", "apt-get", "update"], env=env, capture_output=True)
        out = subprocess.run(["timeout", "-s", "KILL", str(START_TIMEOUT_S), "apt-get", "install", "-y",
                              "--no-install-recommends", *missing], env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"apt-get install {' '.join(missing)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, wait_s: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(wait_s)


class Export:
    """sshd on loopback exporting `root/export`, mounted at `root/node-a` and `root/node-b`."""

    def __init__(self, root: Path):
        self.root, self.export = root, root / "export"
        self.mounts = [root / "node-a", root / "node-b"]
        self.procs: list[subprocess.Popen] = []
        self.made_run_sshd = False

    def start(self) -> Export:
        root = self.root
        self.export.mkdir()
        for mount in self.mounts:
            mount.mkdir()
        keygen = _which("ssh-keygen")
        for name in ("host_key", "client_key"):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        os.chmod(root / "authorized_keys", 0o600)
        self.port = free_port()
        (root / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", f"PidFile {root / 'sshd.pid'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", ""]))
        run_sshd = Path("/run/sshd")   # sshd refuses to start without its privilege-separation directory
        if not run_sshd.exists():
            run_sshd.mkdir(mode=0o755, parents=True)
            self.made_run_sshd = True
        sshd = subprocess.Popen([_which("sshd"), "-D", "-e", "-f", str(root / "sshd_config")],
                                stdout=open(root / "sshd.log", "w"), stderr=subprocess.STDOUT)
        self.procs.append(sshd)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert sshd.poll() is None and time.monotonic() < deadline, (root / "sshd.log").read_text()
                time.sleep(0.1)
        for i, mount in enumerate(self.mounts):
            proc = subprocess.Popen(
                [_which("sshfs"), f"root@127.0.0.1:{self.export}", str(mount), "-f", "-p", str(self.port),
                 "-F", "/dev/null", "-o", f"IdentityFile={root / 'client_key'}", "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "dir_cache=no", "-o", "attr_timeout=0", "-o", "entry_timeout=0",
                 "-o", "LogLevel=ERROR"],
                stdout=open(root / f"sshfs-{i}.log", "w"), stderr=subprocess.STDOUT)
            self.procs.append(proc)
            deadline = time.monotonic() + 20
            while not os.path.ismount(mount):
                assert proc.poll() is None and time.monotonic() < deadline, (root / f"sshfs-{i}.log").read_text()
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        for mount in self.mounts:
            if os.path.ismount(mount):
                subprocess.run(["fusermount3" if shutil.which("fusermount3") else "fusermount", "-u", "-z",
                                str(mount)], capture_output=True)
        for proc in reversed(self.procs):
            stop(proc)
        if self.made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    install_missing()
    exp = Export(tmp_path_factory.mktemp("shared-fs"))
    try:
        yield exp.start()
    finally:
        exp.stop()


def items(prefix: str, n: int, own: str | None = None) -> list[dict]:
    return [{"id": f"{own or 'common'}-{i}", "question": f"Question {prefix} {i}?",
             "answer": f"{prefix} answer {own or 'common'} {i}."} for i in range(n)]


def write_items(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def start_node(host: str, mount: Path, cache: str, items_path: Path, out_dir: Path, server, *extra):
    """`python -m reset.judge` under hostname `host`, with its cache through `mount`."""
    out, summary, logfile = out_dir / f"{host}.jsonl", out_dir / f"{host}.summary.json", out_dir / f"{host}.log"
    judge = [sys.executable, "-m", "reset.judge", "--provider", "openai", "--base-url", server.url,
             "--model", "judge-m", "--api-key-env", KEY_ENV, "--in", str(items_path), "--out", str(out),
             "--cache", str(mount / cache), "--summary", str(summary), "--concurrency", "3",
             "--timeout-s", "20", "--backoff-base-s", "0.05", "--claim-ttl-s", "3", *extra]
    script = f'hostname {host} && exec "$@"'
    env = {**os.environ, KEY_ENV: "sk-shared-fs-test", "PYTHONPATH": str(REPO)}
    # unshare execs sh, sh execs python: the pid is the judge's own
    proc = subprocess.Popen(["unshare", "--uts", "sh", "-c", script, "sh", *judge], cwd=REPO, env=env,
                            stdout=open(logfile, "w"), stderr=subprocess.STDOUT)
    return proc, out, summary, logfile


def finish(proc, logfile, timeout_s: float = 120) -> None:
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        stop(proc, signal.SIGKILL)
        raise AssertionError(f"judge run did not finish:\n{logfile.read_text()[-3000:]}") from None
    assert proc.returncode == 0, logfile.read_text()[-3000:]


def expected(item) -> int:
    return rating_for(answer_block(judge_prompt(item["question"], item["answer"])[1]["content"]))


def paid(server, item) -> int:
    """Requests the server saw for this item's prompt."""
    return sum(item["answer"] in r["user_text"] for r in server.requests)


def shard_lines(export: Path, cache: str, host: str) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in (export / cache / "shards").glob(f"{host}-*.jsonl"))


def test_two_nodes_at_once_keep_every_judgement_and_pay_each_prompt_once(export, tmp_path):
    common = items("alpha", 20)
    own_a, own_b = items("alpha", 20, own="a"), items("alpha", 20, own="b")
    path_a = write_items(tmp_path / "a.jsonl", common + own_a)
    path_b = write_items(tmp_path / "b.jsonl", own_b + common)   # the other order: they meet in the middle
    with ChatServer() as server:
        server.fault_on("alpha", *[Fault.slow(0.1)] * 200)      # slow enough for the runs to overlap
        runs = [start_node("node-a", export.mounts[0], "cache1", path_a, tmp_path, server),
                start_node("node-b", export.mounts[1], "cache1", path_b, tmp_path, server)]
        try:
            for proc, _, _, logfile in runs:
                finish(proc, logfile)
        finally:
            for proc, *_ in runs:
                stop(proc, signal.SIGKILL)
        for (_, out, _, _), rows in zip(runs, (common + own_a, own_b + common), strict=True):
            got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
            assert {i["id"]: (expected(i), None) for i in rows} == \
                   {k: (r["rating"], r["error"]) for k, r in got.items()}
        # every prompt, common or own, was paid exactly once
        assert [paid(server, i) for i in common + own_a + own_b] == [1] * 60
        assert len(server.requests) == 60
        # both nodes wrote their own shard through their own mount
        assert shard_lines(export.export, "cache1", "node-a") + shard_lines(export.export, "cache1", "node-b") == 60
        assert shard_lines(export.export, "cache1", "node-a") > 0 and shard_lines(export.export, "cache1", "node-b") > 0

        # a later run, on either node, pays nothing
        again = start_node("node-c", export.mounts[1], "cache1", write_items(tmp_path / "all.jsonl",
                                                                              common + own_a + own_b), tmp_path, server)
        finish(again[0], again[3])
        assert len(server.requests) == 60
        assert json.loads(again[2].read_text())["cache_hits"] == 60
    assert JudgeCache(export.export / "cache1", create=False).keys().__len__() == 60


def test_kill_9_of_one_node_loses_none_of_its_judgements_and_its_claims_lapse(export, tmp_path):
    common = items("beta", 18)
    path = write_items(tmp_path / "items.jsonl", common)
    stuck = common[3:6]   # node-a's first request for each hangs: it holds their claims when killed
    with ChatServer() as server:
        for item in stuck:
            server.fault_on(item["answer"], Fault.slow(60))
        node_a = start_node("node-a", export.mounts[0], "cache2", path, tmp_path, server)
        node_b = None
        try:
            deadline = time.monotonic() + 90
            claims = export.export / "cache2" / "claims"
            while shard_lines(export.export, "cache2", "node-a") < 3 or \
                    sum(1 for p in claims.glob("[!.]*") if '"node-a"' in p.read_text()) < 3:
                assert node_a[0].poll() is None and time.monotonic() < deadline, node_a[3].read_text()[-3000:]
                time.sleep(0.05)
            node_b = start_node("node-b", export.mounts[1], "cache2", path, tmp_path, server)
            while "waiting for its answer" not in node_b[3].read_text():   # node-b waits on node-a's claims
                assert node_b[0].poll() is None and time.monotonic() < deadline, node_b[3].read_text()[-3000:]
                time.sleep(0.05)
            os.kill(node_a[0].pid, signal.SIGKILL)
            node_a[0].wait(10)
            finish(node_b[0], node_b[3])
        finally:
            stop(node_a[0], signal.SIGKILL)
            if node_b is not None:
                stop(node_b[0], signal.SIGKILL)
        rows = [json.loads(x) for x in node_b[1].read_text().splitlines()]
        assert sorted((r["id"], r["rating"], r["error"]) for r in rows) == \
               sorted((i["id"], expected(i), None) for i in common)
        summary_b = json.loads(node_b[2].read_text())
        # node-a's three finished judgements were kept: node-b took them from the cache
        assert shard_lines(export.export, "cache2", "node-a") == 3 and summary_b["cache_hits"] == 3
        # node-a's claims lapsed by expiry (another host: its pid means nothing here) and node-b paid the rest
        assert node_b[3].read_text().count("lapsed claim") == len(stuck)
        assert summary_b["requests"] == 15
        # every prompt paid once, except the three node-a was asking when it was killed
        assert [paid(server, i) for i in common] == [1, 1, 1, 2, 2, 2] + [1] * 12

        # every judgement either node stored is kept: a re-run pays nothing
        rerun = start_node("node-c", export.mounts[0], "cache2", path, tmp_path, server)
        before = len(server.requests)
        finish(rerun[0], rerun[3])
        assert len(server.requests) == before and json.loads(rerun[2].read_text())["cache_hits"] == len(common)
