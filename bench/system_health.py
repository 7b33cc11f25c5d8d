"""Benchmark: how long does the System Health check take against many slow endpoints?

Run:  .venv/bin/python bench/system_health.py [--endpoints 200] [--delay 0.3] [--deadline 5] [--quick]

Two scenarios, each measured four ways in the same run:

  A: N endpoints answering after `delay`, plus one that accepts and never answers (so the run
     cannot end before its `deadline`);
  B: the same N endpoints without the hanging one.

  tokenforge probes   runbook.procedures.system_health.probe_endpoints alone (the probes' makespan)
  tokenforge flow     the whole system-health Prefect flow, against a local Prefect server
  blackbox_exporter   Prometheus' blackbox_exporter probing every endpoint at once
  naive sequential    plain httpx, one request after another (the baseline)

Every number printed is measured in this run: ratios are against the naive baseline and against
the ideal makespan (max(delay, deadline if a hanging endpoint is present)), never against stored
figures. Each measurement's verdicts are checked against what the endpoints were built to do, so
a fast run made of errors shows up as wrong, not as fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from runbook import settings as config
from runbook.checks import Status
from runbook.clients import http_probe
from runbook.procedures import system_health
from runbook.secrets import SecretResolver
from sandbox.httpserver import Listener, Request, Response

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "system_health.json"
BLACKBOX_BIN = Path("/usr/bin/prometheus-blackbox-exporter")
PREFECT_START_LIMIT_S = 120  # it takes 17-40 s here; room for a slow machine, but not forever
ROWS = ("tokenforge probes", "tokenforge flow", "blackbox_exporter", "naive sequential")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it; a tiny race is acceptable here)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def say(line: str = "") -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    should_pass: bool  # what the endpoint was built to do: answer in time, or hang


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    targets: tuple[Target, ...]
    delay_s: float
    ideal_s: float  # the fastest any prober could possibly finish


@dataclass
class Measurement:
    name: str
    wall_s: float | None = None
    verdicts: dict[str, bool] = field(default_factory=dict)  # target name -> probe said healthy
    reasons: dict[str, str] = field(default_factory=dict)  # target name -> why it said unhealthy
    unavailable: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def passed(self) -> int:
        return sum(self.verdicts.values())

    def failed(self) -> int:
        return len(self.verdicts) - self.passed()

    def wrong(self, scenario: Scenario) -> list[str]:
        """Targets whose verdict differs from what the endpoint does (missing counts as wrong)."""
        return [t.name for t in scenario.targets if self.verdicts.get(t.name) is not t.should_pass]


# --------------------------------------------------------------------------------------------
# The endpoints: the sandbox's own HTTP server, in a thread with its own event loop, so that the
# loop being measured does not also spend time serving the answers it waits for.
# --------------------------------------------------------------------------------------------


class Endpoints:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.port = free_port()
        self.hang_port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="endpoints", daemon=True)
        self._delayed = Listener(HOST, self.port, self._answer_late)
        self._hanging = Listener(HOST, self.hang_port, self._never_answer)

    async def _answer_late(self, request: Request) -> Response:
        await asyncio.sleep(self.delay_s)
        return Response.text("ok")

    async def _never_answer(self, request: Request) -> Response:
        # Accepts the request and waits until Listener.stop() cancels this connection.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def url(self, i: int) -> str:
        return f"http://{HOST}:{self.port}/e/{i}"

    @property
    def hang_url(self) -> str:
        return f"http://{HOST}:{self.hang_port}/hang"

    def start(self) -> None:
        self._thread.start()
        for listener in (self._delayed, self._hanging):
            asyncio.run_coroutine_threadsafe(listener.start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        for listener in (self._delayed, self._hanging):
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(listener.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


# --------------------------------------------------------------------------------------------
# Subprocesses (Prefect server, blackbox_exporter): own process group, so Ctrl-C in the terminal
# reaches only the bench, which then stops them itself; and a stop that cannot leave them behind.
# --------------------------------------------------------------------------------------------


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)


def wait_until_up(url: str, proc: subprocess.Popen[bytes], limit_s: float, log: Path) -> float:
    """Poll `url` until it answers 200; bounded by `limit_s`. Returns the seconds it took."""
    started = time.perf_counter()
    with httpx.Client(timeout=2, trust_env=False) as client:
        while time.perf_counter() - started < limit_s:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.25)
    raise RuntimeError(f"{url} did not come up within {limit_s:.0f} s (log: {log})")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no proxy settings, so every request stays on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra)
    return env


def start_prefect_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    api = f"http://{HOST}:{port}/api"
    prefect_bin = Path(sys.executable).parent / "prefect"
    env = clean_env(
        PREFECT_HOME=str(workdir / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_UI_API_URL=api,
    )
    log = workdir / "prefect-server.log"
    proc = spawn(
        [str(prefect_bin), "server", "start", "--host", HOST, "--port", str(port), "--no-services"],
        log,
        env,
    )
    try:
        took = wait_until_up(f"{api}/health", proc, PREFECT_START_LIMIT_S, log)
    except BaseException:
        stop_process(proc)
        raise
    return proc, api, took


def ensure_blackbox_installed() -> str | None:
    """None when the binary is there (installing it with apt-get if needed), else why not."""
    if BLACKBOX_BIN.exists():
        return None
    say(f"blackbox_exporter: {BLACKBOX_BIN} is missing; installing prometheus-blackbox-exporter with apt-get")
    try:
        done = subprocess.run(
            ["apt-get", "install", "-y", "prometheus-blackbox-exporter"],
            capture_output=True, text=True, timeout=600,
            env=clean_env(DEBIAN_FRONTEND="noninteractive"),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get install failed: {exc}"
    if done.returncode != 0 or not BLACKBOX_BIN.exists():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"apt-get install failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}"
    say("blackbox_exporter: installed")
    return None


@dataclass
class Blackbox:
    proc: subprocess.Popen[bytes]
    url: str
    version: str


def start_blackbox(workdir: Path, deadline_s: float) -> Blackbox:
    cfg = workdir / "blackbox.yml"
    # The module's own timeout and the scrape-timeout header both say `deadline_s`. The exporter
    # subtracts --timeout-offset (default 0.5 s) from the header, which would give it a shorter
    # deadline than the others; offset 0 makes all four wait for the hanging endpoint equally long.
    cfg.write_text(
        "modules:\n"
        "  http_2xx:\n"
        "    prober: http\n"
        f"    timeout: {deadline_s:g}s\n"
        "    http:\n"
        "      preferred_ip_protocol: ip4\n"
        "      valid_status_codes: [200]\n"
    )
    port = free_port()
    version = subprocess.run(
        [str(BLACKBOX_BIN), "--version"], capture_output=True, text=True, timeout=10
    )
    log = workdir / "blackbox.log"
    proc = spawn(
        [
            str(BLACKBOX_BIN),
            f"--config.file={cfg}",
            f"--web.listen-address={HOST}:{port}",
            "--timeout-offset=0",
        ],
        log,
        clean_env(),
    )
    url = f"http://{HOST}:{port}"
    try:
        wait_until_up(url + "/", proc, 30, log)
    except BaseException:
        stop_process(proc)
        raise
    first = (version.stdout or version.stderr).strip().splitlines()
    return Blackbox(proc, url, first[0] if first else "unknown version")


# --------------------------------------------------------------------------------------------
# Settings: the same dict feeds runbook.settings.parse (probes alone) and the TOML file (flow).
# --------------------------------------------------------------------------------------------


def settings_data(targets: tuple[Target, ...], deadline_s: float) -> dict[str, Any]:
    default_pool = config.Probes.model_fields["max_connections"].default
    return {
        "environment": "bench",
        # The project's default pool, unless it could not hold every probe at once.
        "probes": {"timeout_s": deadline_s, "max_connections": max(default_pool, len(targets) + 1)},
        "endpoints": [
            {
                "name": t.name,
                "component": "api",
                "url": t.url,
                # The latency limit is the deadline, so the verdict says "answered 200 in time";
                # the latencies the probes report are examined separately (see probe_latencies).
                "expect": {"status": [200], "max_latency_ms": deadline_s * 1000},
            }
            for t in targets
        ],
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of plain ASCII is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def write_env_file(data: dict[str, Any], path: Path) -> Path:
    """Only what settings_data produces: top-level scalars, the [probes] table, [[endpoints]]."""
    lines = [f"environment = {_toml_value(data['environment'])}", "", "[probes]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in data["probes"].items()]
    for endpoint in data["endpoints"]:
        lines += ["", "[[endpoints]]"] + [f"{k} = {_toml_value(v)}" for k, v in endpoint.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # The flow must check exactly what the probes-alone measurement checks.
    loaded = config.load(path)
    if loaded.endpoints != config.parse(data).endpoints or loaded.probes != config.parse(data).probes:
        raise RuntimeError(f"{path} does not load back to the bench's settings")
    return path


# --------------------------------------------------------------------------------------------
# The four measurements
# --------------------------------------------------------------------------------------------


async def measure_tokenforge_probes(scenario: Scenario, deadline_s: float) -> Measurement:
    settings = config.parse(settings_data(scenario.targets, deadline_s))
    resolver = SecretResolver(Path("."))
    m = Measurement(ROWS[0])
    async with http_probe.make_client(settings.probes.max_connections) as client:
        # thread_time: CPU spent by this thread (the probing loop), to tell waiting from working.
        cpu0, t0 = time.thread_time(), time.perf_counter()
        results = await system_health.probe_endpoints(settings, client, resolver)
        m.wall_s = time.perf_counter() - t0
        cpu = time.thread_time() - cpu0
    m.verdicts = {r.name: r.status.passed for r in results}
    # Every endpoint built to answer, whatever the verdict: a wrong verdict's latency is evidence too.
    answering = {t.name for t in scenario.targets if t.should_pass}
    latencies = [r.latency_s for r in results if r.name in answering and r.latency_s is not None]
    m.extra = {"client_loop_cpu_s": round(cpu, 3), **probe_latencies(latencies)}
    m.reasons = {r.name: r.observed for r in results if not r.status.passed}
    return m


def probe_latencies(latencies: list[float]) -> dict[str, Any]:
    """What the probes reported as each healthy endpoint's latency, against the project's default
    latency limit: a probe's latency includes any time its own client spent before reading."""
    if not latencies:
        return {}
    default_ms = config.Expectation.model_fields["max_latency_ms"].default
    return {
        "reported_latency_min_s": round(min(latencies), 3),
        "reported_latency_median_s": round(statistics.median(latencies), 3),
        "reported_latency_max_s": round(max(latencies), 3),
        "default_max_latency_ms": default_ms,
        "over_default_max_latency": sum(v * 1000 > default_ms for v in latencies),
    }


async def measure_tokenforge_flow(scenario: Scenario, deadline_s: float, workdir: Path) -> Measurement:
    from flows.system_health import system_health_flow  # imports Prefect: only after the API is set

    env_file = write_env_file(
        settings_data(scenario.targets, deadline_s), workdir / f"bench-{scenario.key}.toml"
    )
    m = Measurement(ROWS[1])
    t0 = time.perf_counter()
    report = await system_health_flow(env_file=str(env_file))
    m.wall_s = time.perf_counter() - t0
    m.verdicts = {c["name"]: Status(c["status"]).passed for c in report["checks"]}
    m.extra = {"report_duration_s": report["duration_s"]}
    m.reasons = {c["name"]: c["observed"] for c in report["checks"] if not Status(c["status"]).passed}
    return m


async def measure_blackbox(scenario: Scenario, deadline_s: float, blackbox: Blackbox | str) -> Measurement:
    m = Measurement(ROWS[2])
    if isinstance(blackbox, str):
        m.unavailable = blackbox
        return m
    # A pool for every probe at once, and a client timeout past the exporter's own deadline so
    # the exporter, not this client, decides when a probe has failed. No keep-alive: each /probe
    # request is sent once, and httpcore 1.0.x rescans its whole pool for every idle connection on
    # every request it starts or ends, which with ~200 idle connections costs this client seconds
    # of CPU and would be billed to the exporter (measured: 3.3-4.1 s pooled vs 1.4 s without).
    limits = httpx.Limits(max_connections=len(scenario.targets) + 10, max_keepalive_connections=0)
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": f"{deadline_s:g}"}
    async with httpx.AsyncClient(
        limits=limits, timeout=deadline_s + 10, headers=headers, trust_env=False
    ) as client:

        async def one(t: Target) -> tuple[str, bool]:
            r = await client.get(
                f"{blackbox.url}/probe", params={"target": t.url, "module": "http_2xx"}
            )
            found = re.search(r"^probe_success\s+(\S+)$", r.text, re.MULTILINE)
            if r.status_code != 200 or found is None:
                m.reasons[t.name] = f"exporter answered {r.status_code} without probe_success"
                return t.name, False
            if float(found.group(1)) != 1:
                m.reasons[t.name] = f"probe_success {found.group(1)}"
            return t.name, float(found.group(1)) == 1

        t0 = time.perf_counter()
        answers = await asyncio.gather(*(one(t) for t in scenario.targets))
        m.wall_s = time.perf_counter() - t0
    m.verdicts = dict(answers)
    m.extra = {"version": blackbox.version}
    return m


async def measure_naive(scenario: Scenario, deadline_s: float) -> Measurement:
    m = Measurement(ROWS[3])
    async with httpx.AsyncClient(timeout=deadline_s, trust_env=False) as client:
        t0 = time.perf_counter()
        for t in scenario.targets:  # one request at a time: the baseline
            try:
                status = (await client.get(t.url)).status_code
            except httpx.HTTPError as exc:
                m.verdicts[t.name], m.reasons[t.name] = False, http_probe.describe_error(exc)
                continue
            m.verdicts[t.name] = status == 200
            if status != 200:
                m.reasons[t.name] = f"status {status}"
        m.wall_s = time.perf_counter() - t0
    return m


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def ratios(m: Measurement, naive: Measurement, scenario: Scenario) -> tuple[float | None, float | None]:
    if m.wall_s is None or m.wall_s <= 0:
        return None, None
    vs_naive = naive.wall_s / m.wall_s if naive.wall_s else None
    return vs_naive, m.wall_s / scenario.ideal_s


def render_table(scenario: Scenario, ms: list[Measurement]) -> str:
    naive = ms[-1]
    head = (
        f"{'measurement':<19} {'wall (s)':>9} {'naive/this':>11} {'this/ideal':>11} "
        f"{'passed':>7} {'failed':>7}  verdicts"
    )
    out = [f"Scenario {scenario.key}: {scenario.title} (ideal {scenario.ideal_s:g} s)", head, "-" * len(head)]
    for m in ms:
        if m.unavailable is not None:
            out.append(f"{m.name:<19} unavailable ({m.unavailable})")
            continue
        vs_naive, vs_ideal = ratios(m, naive, scenario)
        wrong = m.wrong(scenario)
        verdict = "as expected" if not wrong else f"{len(wrong)} WRONG (e.g. {', '.join(wrong[:3])})"
        out.append(
            f"{m.name:<19} {m.wall_s:>9.2f} {_x(vs_naive):>11} {_x(vs_ideal):>11} "
            f"{m.passed():>7} {m.failed():>7}  {verdict}"
        )
    return "\n".join(out)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def notes_for(scenario: Scenario, ms: list[Measurement]) -> list[str]:
    probes = ms[0]
    notes = []
    if "reported_latency_max_s" in probes.extra:
        e = probes.extra
        notes.append(
            f"scenario {scenario.key}, tokenforge probes: "
            f"client loop CPU {e['client_loop_cpu_s']:.2f} s of {probes.wall_s:.2f} s wall; "
            f"reported latency of {sum(t.should_pass for t in scenario.targets)} "
            f"endpoints answering after {scenario.delay_s:g} s: "
            f"min {e['reported_latency_min_s']:.2f} s, median {e['reported_latency_median_s']:.2f} s, "
            f"max {e['reported_latency_max_s']:.2f} s; {e['over_default_max_latency']} over the default "
            f"max_latency_ms of {e['default_max_latency_ms']:g}"
        )
    for m in ms:
        if m.wall_s is not None and m.wrong(scenario):
            wrong = m.wrong(scenario)
            examples = "; ".join(f"{n}: {m.reasons.get(n, 'no verdict')}" for n in wrong[:3])
            notes.append(f"scenario {scenario.key}, {m.name}: {len(wrong)} wrong verdicts, e.g. {examples}")
    return notes


def summary(results: dict[Scenario, list[Measurement]]) -> str:
    parts = []
    for scenario, ms in results.items():
        probes, naive = ms[0], ms[-1]
        vs_naive, vs_ideal = ratios(probes, naive, scenario)
        bb = ms[2]
        bb_part = (
            f", blackbox_exporter {bb.wall_s:.2f} s" if bb.wall_s is not None else ", blackbox_exporter n/a"
        )
        parts.append(
            f"{scenario.key}: tokenforge probes {probes.wall_s:.2f} s ({_x(vs_naive)} faster than naive, "
            f"{_x(vs_ideal)} ideal), flow {ms[1].wall_s:.2f} s{bb_part}, naive {naive.wall_s:.2f} s"
        )
    all_right = all(not m.wrong(s) for s, ms in results.items() for m in ms if m.wall_s is not None)
    verdicts = "all verdicts as expected." if all_right else "SOME VERDICTS WRONG."
    return "Summary: " + "; ".join(parts) + "; " + verdicts


def to_json(
    args: argparse.Namespace, results: dict[Scenario, list[Measurement]], context: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bench": "system_health",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {
            "endpoints": args.endpoints,
            "delay_s": args.delay,
            "deadline_s": args.deadline,
            "quick": args.quick,
        },
        "context": context,
        "scenarios": {},
    }
    for scenario, ms in results.items():
        naive = ms[-1]
        rows = {}
        for m in ms:
            vs_naive, vs_ideal = ratios(m, naive, scenario)
            rows[m.name] = {
                "wall_s": None if m.wall_s is None else round(m.wall_s, 3),
                "naive_over_this": None if vs_naive is None else round(vs_naive, 2),
                "this_over_ideal": None if vs_ideal is None else round(vs_ideal, 2),
                "passed": m.passed(),
                "failed": m.failed(),
                "wrong_verdicts": m.wrong(scenario) if m.wall_s is not None else None,
                "wrong_reasons": (
                    {n: m.reasons.get(n) for n in m.wrong(scenario)[:5]} if m.wall_s is not None else None
                ),
                "unavailable": m.unavailable,
                **m.extra,
            }
        out["scenarios"][scenario.key] = {
            "title": scenario.title,
            "probes": len(scenario.targets),
            "ideal_s": scenario.ideal_s,
            "measurements": rows,
        }
    out["summary"] = summary(results)
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def build_scenarios(endpoints: Endpoints, n: int, delay_s: float, deadline_s: float) -> list[Scenario]:
    delayed = tuple(Target(f"e{i:04d}", endpoints.url(i), True) for i in range(n))
    hanging = Target("hang", endpoints.hang_url, False)
    return [
        Scenario("A", f"{n} endpoints x {delay_s:g} s + 1 hanging, deadline {deadline_s:g} s",
                 (*delayed, hanging), delay_s, max(delay_s, deadline_s)),
        Scenario("B", f"{n} endpoints x {delay_s:g} s, no hanging one", delayed, delay_s, delay_s),
    ]


async def run_all(
    scenarios: list[Scenario], deadline_s: float, workdir: Path, blackbox: Blackbox | str,
    warmup: Callable[[], Awaitable[float]],
) -> tuple[dict[Scenario, list[Measurement]], float]:
    # One untimed flow run first: the first call of a flow in a process registers it and opens
    # the API client, a one-off cost that is not what a daily checklist run pays.
    cold = await warmup()
    say(f"(untimed warm-up flow run, 1 endpoint: {cold:.2f} s)")
    results: dict[Scenario, list[Measurement]] = {}
    for scenario in scenarios:
        ms = []
        for label, measure in (
            (ROWS[0], lambda s=scenario: measure_tokenforge_probes(s, deadline_s)),
            (ROWS[1], lambda s=scenario: measure_tokenforge_flow(s, deadline_s, workdir)),
            (ROWS[2], lambda s=scenario: measure_blackbox(s, deadline_s, blackbox)),
            (ROWS[3], lambda s=scenario: measure_naive(s, deadline_s)),
        ):
            m = await measure()
            ms.append(m)
            took = "unavailable" if m.wall_s is None else f"{m.wall_s:.2f} s"
            say(f"  scenario {scenario.key}: {label}: {took}")
        results[scenario] = ms
    return results, cold


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM cleans up like Ctrl-C does: by unwinding through the cleanup stack in main()."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=200, help="delayed endpoints (default 200)")
    parser.add_argument("--delay", type=float, default=0.3, help="seconds each endpoint waits (default 0.3)")
    parser.add_argument("--deadline", type=float, default=5, help="probe deadline in seconds (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 endpoints")
    args = parser.parse_args(argv)
    if args.quick:
        args.endpoints = 20
    if not (1 <= args.endpoints <= 5000 and 0 < args.delay < args.deadline <= 120):
        parser.error("need 1 <= endpoints <= 5000 and 0 < delay < deadline <= 120")

    signal.signal(signal.SIGTERM, _interrupt)

    # The temp dir is the outer context: it is removed only after every process writing to it stopped.
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp, contextlib.ExitStack() as cleanup:
        workdir = Path(tmp)
        endpoints = Endpoints(args.delay)
        cleanup.callback(endpoints.stop)
        endpoints.start()

        reason = ensure_blackbox_installed()
        blackbox: Blackbox | str
        if reason is None:
            try:
                blackbox = start_blackbox(workdir, args.deadline)
                cleanup.callback(stop_process, blackbox.proc)
                say(f"blackbox_exporter: {blackbox.version}, at {blackbox.url}")
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                blackbox = f"could not start: {exc}"
        else:
            blackbox = reason
        if isinstance(blackbox, str):
            say(f"blackbox_exporter: unavailable ({blackbox})")

        say("starting the Prefect server (not timed) ...")
        server, api, took = start_prefect_server(workdir)
        cleanup.callback(stop_process, server)
        say(f"Prefect server up at {api} after {took:.1f} s")
        # Prefect reads these when imported: only import it (in measure_tokenforge_flow) after this.
        os.environ.update(
            PREFECT_API_URL=api,
            PREFECT_HOME=str(workdir / "prefect-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
        )

        scenarios = build_scenarios(endpoints, args.endpoints, args.delay, args.deadline)
        warm = Scenario("warmup", "warm-up", (scenarios[1].targets[0],), args.delay, args.delay)

        async def warmup() -> float:
            t0 = time.perf_counter()
            await measure_tokenforge_flow(warm, args.deadline, workdir)
            return time.perf_counter() - t0

        # Other work on the machine shows in every row; the load average says how busy it was.
        load_before = os.getloadavg()
        results, cold = asyncio.run(run_all(scenarios, args.deadline, workdir, blackbox, warmup))
        load_after = os.getloadavg()

    # Everything is stopped here; report.
    say()
    say(
        f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before[0]:.2f} before the "
        f"measurements, {load_after[0]:.2f} after; Prefect server start {took:.1f} s and warm-up "
        f"flow run {cold:.2f} s (neither timed below)"
    )
    say()
    notes = []
    for scenario, ms in results.items():
        say(render_table(scenario, ms))
        say()
        notes += notes_for(scenario, ms)
    for note in notes:
        say(f"note: {note}")
    say(summary(results))

    context = {
        "python": platform.python_version(),
        "prefect": _version("prefect"),
        "httpx": httpx.__version__,
        "httpcore": _version("httpcore"),
        "cpus": os.cpu_count(),
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "blackbox_exporter": (
            blackbox.version if isinstance(blackbox, Blackbox) else f"unavailable: {blackbox}"
        ),
        "prefect_server_start_s": round(took, 1),
        "warmup_flow_s": round(cold, 3),
    }
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(to_json(args, results, context), indent=2) + "\n")
    say(f"results written to {RESULTS_FILE.relative_to(BENCH_DIR.parent)}")
    wrong = any(m.wrong(s) for s, ms in results.items() for m in ms if m.wall_s is not None)
    return 1 if wrong else 0


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: endpoints, exporter and Prefect server were stopped", file=sys.stderr)
        sys.exit(130)
