#!/usr/bin/env python3
"""The service under load and attack (issue 19), on loopback only; run by bench/attack.sh.

Starts `scion-edge serve` on a live 10 fps test source with a token, a signing key and a
model store, measures it idle, then runs CLIENTS concurrent clients for SECONDS:
classify uploads (valid, corrupt, oversized with and without Content-Length), SSE
subscribers that never read, MJPEG viewers that hang up mid-frame, model uploads and
other mutations with missing, wrong and right tokens and signatures, one client that
installs two signed models in turn, one that reads the events, and readers of the
status endpoints. Then it checks:

  - every answer is the expected one (200 / 400 / 401 / 413 / 422, per request kind),
  - every mutation without the right token was refused,
  - every accepted model swap appears exactly once among the `model` notices, in order,
  - the frame loop's fps under load is within 10% of the idle run (medians),
  - no thread or file descriptor is left over (counted before and after, once the
    runtime's idle threads have timed out), no upload is left in the staging folder,
  - the service is still healthy, logged no panic, and stops cleanly on SIGTERM;

and prints the figures, with the peak resident memory. Exits 1 on any failed check.
Only the Python standard library is used.
"""

import argparse
import collections
import http.client
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_counts(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    kib = lambda key: int(status[key].split()[0])
    return {"fds": fds, "threads": threads, "rss_mib": kib("VmRSS") / 1024, "hwm_mib": kib("VmHWM") / 1024}


def thread_names(pid):
    names = collections.Counter()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                names[f.read().strip()] += 1
        except OSError:
            pass
    return names


class Tally:
    """Answers per request kind, and every unexpected one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.unexpected = []

    def note(self, kind, got, expected):
        with self.lock:
            self.counts[(kind, got)] += 1
            if got not in expected:
                self.unexpected.append(f"{kind}: got {got}, expected {sorted(expected)}")


def request(port, method, path, body=None, headers=None, timeout=30, chunked=False):
    """One request on a new connection; the status code, or a word for a closed connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
        return response.status, data
    except (BrokenPipeError, ConnectionResetError):
        # The server answered before the whole body was sent and closed: try to read its
        # answer, else count the closed connection.
        try:
            response = conn.getresponse()
            return response.status, response.read()
        except Exception:
            return "closed", b""
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edge", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--photos", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--idle-seconds", type=float, default=25)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--install-every", type=float, default=20)
    args = parser.parse_args()

    work = args.work
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    edge = args.edge

    # A signing key, two signed variants of the model (the same graph; a different
    # doc_string, appended as a protobuf field, so a different sha256), a token.
    key = os.path.join(work, "key")
    public = subprocess.run([edge, "keygen", key], check=True, capture_output=True, text=True).stdout.strip()
    base = open(args.model, "rb").read()
    variants = []
    for name in ("a", "b"):
        doc = f"scion load test, variant {name}".encode()
        path = os.path.join(work, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(base + bytes([0x32, len(doc)]) + doc)
        subprocess.run([edge, "sign", "--key", key, path], check=True, capture_output=True)
        variants.append((open(path, "rb").read(), open(path + ".sig", "rb").read().strip()))
    token = secrets.token_hex(16)
    token_file = os.path.join(work, "token")
    with open(token_file, "w") as f:
        f.write(token + "\n")
    photos = [open(os.path.join(args.photos, p), "rb").read() for p in sorted(os.listdir(args.photos)) if p.endswith(".jpg")]
    models_dir = os.path.join(work, "models")

    port = free_port()
    stderr_path = os.path.join(work, "serve.stderr")
    source = "gst://videotestsrc pattern=ball is-live=true ! video/x-raw,width=320,height=240,framerate=10/1"
    server = subprocess.Popen(
        [edge, "serve", "--model", args.model, "--source", source, "--events-only",
         "--output", os.path.join(work, "events.jsonl"), "--listen", f"{HOST}:{port}",
         "--token-file", token_file, "--models-dir", models_dir, "--public-key", public,
         "--capture-dir", os.path.join(work, "captures")],
        stderr=open(stderr_path, "w"))
    pid = server.pid

    def status():
        code, data = request(port, "GET", "/v1/status", timeout=10)
        return json.loads(data) if code == 200 else None

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if request(port, "GET", "/healthz", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if server.poll() is not None:
            sys.exit(f"attack: the service exited ({server.returncode}); see {stderr_path}")
        time.sleep(0.5)
    else:
        sys.exit("attack: the service did not become ready in 120 s")

    def sample_fps(seconds, samples, peaks):
        end = time.time() + seconds
        while time.time() < end:
            time.sleep(1)
            s = status()
            if s is not None and s.get("fps") is not None:
                samples.append(s["fps"])
            peaks.append(proc_counts(pid)["rss_mib"])

    # Idle: the warm-up's first seconds left out.
    time.sleep(5)
    idle_fps, idle_rss = [], []
    sample_fps(args.idle_seconds, idle_fps, idle_rss)
    before = proc_counts(pid)
    before_names = thread_names(pid)

    tally = Tally()
    stop = threading.Event()
    auth = {"Authorization": f"Bearer {token}"}
    wrong_tokens = [
        {},
        {"Authorization": "Bearer " + secrets.token_hex(16)},
        {"Authorization": "Bearer " + token[:-1]},
        {"Authorization": "Bearer " + token + "0"},
        {"Authorization": "bearer " + token},
        {"Authorization": token},
        {"Authorization": "Basic " + token},
    ]
    model_bytes, _ = variants[0]
    oversized = os.urandom(11 << 20)

    def classify_client(rng):
        while not stop.is_set():
            kind = rng.choice(["valid", "corrupt", "corrupt", "oversized"])
            if kind == "valid":
                code, _ = request(port, "POST", "/v1/classify", rng.choice(photos))
                tally.note("classify valid", code, {200})
            elif kind == "corrupt":
                photo = rng.choice(photos)
                body = rng.choice([photo[: rng.randrange(1, len(photo) // 2)], os.urandom(rng.randrange(1, 4096)),
                                   b"\x89PNG\r\n\x1a\n" + os.urandom(200), photo[:20] + os.urandom(len(photo) - 20)])
                code, _ = request(port, "POST", "/v1/classify", body)
                # A JPEG with a random body can still decode (to noise): 200 is allowed there.
                tally.note("classify corrupt", code, {400, 200})
            elif rng.random() < 0.5:
                code, _ = request(port, "POST", "/v1/classify", oversized)
                tally.note("classify oversized", code, {413, "closed"})
            else:
                chunks = (oversized[i:i + (1 << 16)] for i in range(0, len(oversized), 1 << 16))
                code, _ = request(port, "POST", "/v1/classify", chunks, chunked=True)
                tally.note("classify oversized, chunked", code, {413, "closed"})
            stop.wait(rng.uniform(0.5, 1.5))

    held = []

    def never_reading_subscriber(rng):
        path = rng.choice(["/v1/events", "/v1/preview.mjpeg"])
        s = socket.create_connection((HOST, port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        held.append(s)
        stop.wait()
        tally.note("subscriber that never reads", "held", {"held"})

    def mjpeg_viewer(rng):
        while not stop.is_set():
            s = socket.create_connection((HOST, port), timeout=10)
            try:
                s.sendall(b"GET /v1/preview.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n")
                want, got = rng.randrange(200, 60000), 0
                while got < want:
                    chunk = s.recv(min(8192, want - got))
                    if not chunk:
                        break
                    got += len(chunk)
                tally.note("mjpeg viewer hung up", "read" if got >= want else "ended early", {"read"})
                if rng.random() < 0.5:
                    # A reset rather than a clean close.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError as e:
                tally.note("mjpeg viewer hung up", f"error {e}", {"read"})
            finally:
                s.close()
            stop.wait(rng.uniform(0.1, 1.0))

    def mutator(rng):
        while not stop.is_set():
            case = rng.randrange(6)
            if case == 0:
                code, _ = request(port, "POST", "/v1/model", model_bytes, rng.choice(wrong_tokens))
                tally.note("model upload, missing or wrong token", code, {401, "closed"})
            elif case == 1:
                sig = secrets.token_hex(64).encode()
                code, _ = request(port, "POST", "/v1/model", model_bytes, {**auth, "X-Scion-Signature": sig})
                tally.note("model upload, wrong signature", code, {422})
            elif case == 2:
                code, _ = request(port, "POST", "/v1/model", model_bytes, auth)
                tally.note("model upload, no signature", code, {422})
            elif case == 3:
                body = os.urandom(rng.randrange(1, 100000))
                code, _ = request(port, "POST", "/v1/model", body, {**auth, "X-Scion-Signature": secrets.token_hex(64)})
                tally.note("model upload, garbage", code, {422})
            elif case == 4:
                method, path, body = rng.choice([
                    ("POST", "/v1/capture", None), ("POST", "/v1/references", rng.choice(photos)),
                    ("POST", "/v1/captures/confirm", b'{"path": "../../etc/passwd", "label": "x"}'),
                    ("GET", "/v1/model/file", None), ("GET", "/v1/captures", None),
                    ("GET", "/v1/captures.zip", None)])
                code, _ = request(port, method, path, body, rng.choice(wrong_tokens))
                tally.note("other mutation, missing or wrong token", code, {401})
            else:
                body = json.dumps({"path": rng.choice(["../../etc/passwd", "/etc/passwd", "x/../../y.jpg"]),
                                   "label": "x"}).encode()
                code, _ = request(port, "POST", "/v1/captures/confirm", body, auth)
                tally.note("capture confirm, escaping path", code, {409, 422, 400, 404})
            stop.wait(rng.uniform(0.3, 1.0))

    installed = []

    def installer(rng):
        turn = 1
        while not stop.wait(args.install_every):
            data, sig = variants[turn % 2]
            code, answer = request(port, "POST", "/v1/model", data, {**auth, "X-Scion-Signature": sig}, timeout=120)
            tally.note("model upload, signed", code, {200})
            if code == 200:
                installed.append(json.loads(answer)["model"]["sha256"][:12])
            turn += 1

    notices = []

    def event_reader(rng):
        # http.client undoes the chunked framing; the stream's keep-alive comments (every
        # 10 s) let the loop look at the clock.
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.request("GET", "/v1/events")
        response = conn.getresponse()
        event, data = None, []
        while not stop.is_set() or time.time() < drained_by[0]:
            line = response.readline()
            if not line:
                break
            line = line.decode(errors="replace").rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line:
                if event == "notice":
                    notice = json.loads("".join(data))
                    if notice["kind"] == "model":
                        notices.append(notice["message"])
                event, data = None, []
        conn.close()

    def reader(rng):
        while not stop.is_set():
            path = rng.choice(["/healthz", "/metrics", "/v1/status", "/v1/latest", "/", "/v1/model", "/assets/app.js"])
            code, _ = request(port, "GET", path)
            tally.note(f"read {path}", code, {200})
            stop.wait(rng.uniform(0.2, 1.0))

    drained_by = [float("inf")]
    roles = [event_reader, installer] + [classify_client] * 16 + [never_reading_subscriber] * 8 + \
        [mjpeg_viewer] * 8 + [mutator] * 12 + [reader] * 4
    roles = roles[: args.clients]
    threads = []
    for i, role in enumerate(roles):
        t = threading.Thread(target=role, args=(random.Random(i),), daemon=True)
        threads.append(t)
        t.start()
    load_fps, load_rss = [], []
    started = time.time()
    sample_fps(args.seconds, load_fps, load_rss)
    drained_by[0] = time.time() + 5
    stop.set()
    for t in threads:
        t.join(timeout=130)
    stuck = [t for t in threads if t.is_alive()]
    for s in held:
        s.close()
    load_s = time.time() - started
    peak = proc_counts(pid)

    # The runtime's idle blocking threads end 10 s after their last job.
    time.sleep(15)
    after = proc_counts(pid)
    after_names = thread_names(pid)
    healthy = request(port, "GET", "/healthz")[0]
    staging = os.listdir(os.path.join(models_dir, "incoming"))
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "killed after 30 s"
    log = open(stderr_path, errors="replace").read()

    checks = []

    def check(ok, text):
        checks.append((ok, text))

    idle_median, load_median = statistics.median(idle_fps), statistics.median(load_fps)
    check(not tally.unexpected, f"every answer as expected ({sum(tally.counts.values())} requests)")
    check(not stuck, f"every client finished ({len(stuck)} stuck)")
    swaps = [m.split("(")[1].split(")")[0] for m in notices]
    check(installed and swaps == installed,
          f"every accepted swap seen once in the events: {len(installed)} accepted, notices for {swaps}")
    check(load_median >= 0.9 * idle_median,
          f"fps under load within 10% of idle: median {load_median:.2f} against {idle_median:.2f} "
          f"({100 * (load_median / idle_median - 1):+.1f}%)")
    check(after["threads"] <= before["threads"],
          f"no thread left over: {before['threads']} before, {after['threads']} after "
          f"({dict(after_names - before_names) or 'none new'})")
    check(after["fds"] <= before["fds"], f"no file descriptor left over: {before['fds']} before, {after['fds']} after")
    quarters = [max(load_rss[len(load_rss) * q // 4: len(load_rss) * (q + 1) // 4]) for q in range(4)]
    check(quarters[3] <= 1.1 * max(quarters[1], quarters[2]),
          f"memory levels off: the last quarter's peak {quarters[3]:.0f} MiB is within 10% of the "
          f"middle quarters' {max(quarters[1], quarters[2]):.0f} MiB")
    check(not staging, f"no upload left in the staging folder ({staging})")
    check(healthy == 200, f"healthy after the load (/healthz {healthy})")
    check("panick" not in log, "no panic in the service's log")
    check(code == 0, f"stopped cleanly on SIGTERM (exit {code})")

    print(f"scion-edge serve under attack: {len(roles)} clients for {load_s:.0f} s on loopback "
          f"(live 10 fps test source, 320x240, {os.cpu_count()} cores)")
    print(f"  requests: {sum(tally.counts.values())}")
    for (kind, got), n in sorted(tally.counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"    {kind:<42} {str(got):>8}  x{n}")
    print(f"  fps: idle median {idle_median:.2f} ({len(idle_fps)} samples), under load median {load_median:.2f} "
          f"(min {min(load_fps):.2f}, {len(load_fps)} samples)")
    quarters = [max(load_rss[len(load_rss) * q // 4: len(load_rss) * (q + 1) // 4]) for q in range(4)]
    print(f"  memory: idle {statistics.median(idle_rss):.0f} MiB, under load max {max(load_rss):.0f} MiB "
          f"(by quarter of the run: {', '.join(f'{m:.0f}' for m in quarters)} MiB), "
          f"peak (VmHWM) {peak['hwm_mib']:.0f} MiB, after {after['rss_mib']:.0f} MiB")
    print(f"  threads {before['threads']} -> {after['threads']}, file descriptors {before['fds']} -> {after['fds']} "
          f"(at the end of the load: {peak['threads']} threads, {peak['fds']} descriptors)")
    for line in tally.unexpected[:20]:
        print(f"  unexpected: {line}")
    failed = 0
    for ok, text in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
        failed += not ok
    if failed:
        print(f"attack: {failed} checks failed; the service's log is {stderr_path}")
        sys.exit(1)


if __name__ == "__main__":
    main()
