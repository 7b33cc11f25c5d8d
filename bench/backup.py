"""Benchmark: the Full System Backup's upload against `aws s3 cp`, on one large file.

Run:  .venv/bin/python bench/backup.py [--size-mib 1024] [--part-mb 64] [--concurrency 4] [--aws PATH]

Starts moto's S3 server on 127.0.0.1 (a port of its own, its own process group, stopped at the
end), writes a file of random bytes in a temporary folder, and uploads it:
  tokenforge   runbook.clients.s3.S3Store.upload_file as the backup calls it: the file's SHA-256
               first (it goes into the object's metadata), then a multipart upload streamed from
               disk with a SHA-256 checksum per part and SSE requested;
  aws default  `aws s3 cp` with the CLI's defaults (8 MiB parts, 10 requests at once);
  aws matched  `aws s3 cp` with the same part size, concurrency, SHA-256 checksums and SSE.
Each upload is checked to have stored every byte (size, and for ours the SHA-256 read back), so a
fast wrong answer cannot pass for a fast one. Memory: the peak resident set of our upload (the
kernel's high-water mark, reset just before it) and the Python heap's peak under tracemalloc (a
second, untimed run); for the CLI, its process's peak resident set. Every number printed is
measured in this run. Moto is the same server for both, so its own speed bounds both rates: the
ratio is the meaningful number, not the MiB/s.

The AWS CLI is looked for beside this Python (`.venv/bin/aws`), then on PATH; without it the bench
says so and measures only ours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.system_health import stop_process as stop  # noqa: E402
from runbook.clients.s3 import MiB, S3Store, make_boto3_client  # noqa: E402
from runbook.procedures.backup import _hash_stream  # noqa: E402
from sandbox.stack import HOST, free_port  # noqa: E402

BUCKET = "bench-backups"
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "backup.json"


def start_moto(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (workdir / "moto.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - fixed argument list
        [str(Path(sys.executable).parent / "moto_server"), "-H", HOST, "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    log.close()
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited: {(workdir / 'moto.log').read_text()[-1000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/", timeout=1, trust_env=False).status_code < 500:
                return proc, url
        time.sleep(0.1)
    raise RuntimeError("moto_server did not answer within 30 s")


def write_file(path: Path, size: int) -> None:
    # One random block repeated: random enough that nothing on the way can compress it, and the
    # file is written at disk speed rather than at os.urandom's.
    block = os.urandom(16 * MiB)
    with path.open("wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


def reset_peak_rss() -> bool:
    """Linux resets the VmHWM high-water mark when "5" is written to clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def find_aws(given: str | None) -> str | None:
    if given:
        return given
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return str(beside)
    return shutil.which("aws")


def run_aws(aws: str, args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, the process's peak RSS (KiB), and its output tail."""
    started = time.perf_counter()
    proc = subprocess.Popen([aws, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # noqa: S603
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"aws {' '.join(args)} exited {proc.returncode}: {out.decode(errors='replace')[-800:]}")
    return wall, usage.ru_maxrss, out.decode(errors="replace")[-200:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-mb", type=int, default=64, help="our part size (the backup's default: 64)")
    parser.add_argument("--concurrency", type=int, default=4, help="our parts in flight (the backup's default: 4)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the uploaders take turns going first")
    parser.add_argument("--aws", help="the aws executable (default: beside this Python, then PATH)")
    parser.add_argument("--save", action="store_true", help=f"also write the numbers to {RESULTS_FILE}")
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    aws = find_aws(args.aws)
    walls: dict[str, list[float]] = {}
    memory: dict[str, Any] = {}

    with tempfile.TemporaryDirectory(prefix="tfops-bench-backup-") as tmp:
        workdir = Path(tmp)
        moto, url = start_moto(workdir)
        try:
            client = make_boto3_client(region="us-east-1", endpoint_url=url, access_key_id=SecretStr("testing"),
                                       secret_access_key=SecretStr("testing"), timeout_s=120,
                                       max_pool_connections=max(10, args.concurrency * 2))
            client.create_bucket(Bucket=BUCKET)
            client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
            store = S3Store(client, BUCKET, part_size=args.part_mb * MiB, max_concurrency=args.concurrency)
            data = workdir / "backup.bin"
            t0 = time.perf_counter()
            write_file(data, size)
            print(f"moto at {url}; {args.size_mib} MiB file written in {time.perf_counter() - t0:.1f} s", flush=True)
            # moto's first large upload is slow while its process grows to hold the data; whoever went
            # first would pay for that, so an untimed upload goes first.
            t0 = time.perf_counter()
            warm = store.upload_file(data, "warm-up.bin", sse=None)
            client.delete_object(Bucket=BUCKET, Key="warm-up.bin", VersionId=warm.version_id)
            print(f"untimed warm-up upload: {time.perf_counter() - t0:.1f} s", flush=True)

            def ours() -> float:
                rss_before = rss_kib("VmRSS")
                had_reset = reset_peak_rss()
                t0 = time.perf_counter()
                up = store.upload_file(data, "ours/backup.bin", sse="AES256")
                wall = time.perf_counter() - t0
                peak = rss_kib("VmHWM")
                digest, got = _hash_stream(store, "ours/backup.bin")
                if got != size or digest != up.sha256:
                    raise RuntimeError(f"our upload stored {got} bytes, sha256 {digest[:12]} (sent {size}, "
                                       f"{up.sha256[:12]})")
                client.delete_object(Bucket=BUCKET, Key="ours/backup.bin", VersionId=up.version_id)
                if had_reset:
                    memory["peak_rss_over_before_mib"] = max(memory.get("peak_rss_over_before_mib", 0.0),
                                                             round((peak - rss_before) / 1024, 1))
                    memory["peak_rss_mib"] = max(memory.get("peak_rss_mib", 0.0), round(peak / 1024, 1))
                return wall

            runners: dict[str, Any] = {"tokenforge": ours}
            if aws is None:
                print("\nThe AWS CLI is not installed (no `aws` beside this Python or on PATH), so only our upload"
                      " is measured.\nInstall it with `.venv/bin/python -m pip install awscli` (v1 bundles its own"
                      " botocore) and run again.", flush=True)
            else:
                config = workdir / "aws-config"
                # With --profile the CLI reads credentials from the profile, not the environment.
                keys = "region = us-east-1\naws_access_key_id = testing\naws_secret_access_key = testing\n"
                config.write_text(
                    f"[default]\n{keys}"
                    f"s3 =\n  multipart_chunksize = {args.part_mb}MB\n  multipart_threshold = {args.part_mb}MB\n"
                    f"  max_concurrent_requests = {args.concurrency}\n"
                    f"[profile defaults]\n{keys}")
                env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AWS_")
                       and not k.lower().endswith("_proxy")}
                env.update(AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(workdir / "none"))

                def cli(name: str, key: str, profile: str, extra: list[str]) -> Any:
                    def run() -> float:
                        wall, maxrss, _ = run_aws(aws, ["--profile", profile, "--endpoint-url", url, "s3", "cp",
                                                        str(data), f"s3://{BUCKET}/{key}", "--no-progress", *extra],
                                                  env)
                        stored = client.head_object(Bucket=BUCKET, Key=key)
                        if stored["ContentLength"] != size:
                            raise RuntimeError(f"{name} stored {stored['ContentLength']} of {size} bytes")
                        client.delete_object(Bucket=BUCKET, Key=key, VersionId=stored["VersionId"])
                        memory[f"{name} peak_rss_mib"] = max(memory.get(f"{name} peak_rss_mib", 0.0),
                                                             round(maxrss / 1024, 1))
                        return wall
                    return run

                runners["aws default"] = cli("aws default", "aws/default.bin", "defaults", [])
                runners["aws matched"] = cli("aws matched", "aws/matched.bin", "default",
                                             ["--sse", "AES256", "--checksum-algorithm", "SHA256"])
            names = list(runners)
            for r in range(args.rounds):
                order = names[r % len(names):] + names[: r % len(names)]
                for name in order:
                    walls.setdefault(name, []).append(runners[name]())
                print(f"round {r + 1}: " + ", ".join(f"{n} {walls[n][-1]:.1f} s" for n in order), flush=True)

            up = store.upload_file(data, "ours/traced.bin", sse="AES256")
            tracemalloc.start()
            digest, _ = _hash_stream(store, "ours/traced.bin")
            memory["verify_tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / MiB, 1)
            tracemalloc.reset_peak()
            store.upload_file(data, "ours/traced.bin", sha256=up.sha256, sse="AES256")
            memory["upload_tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / MiB, 1)
            tracemalloc.stop()
        finally:
            stop(moto)

    rows = {name: {"wall_s": [round(w, 2) for w in ws], "median_mib_s": round(args.size_mib / statistics.median(ws), 1)}
            for name, ws in walls.items()}
    print(f"\n{args.size_mib} MiB, ours: {args.part_mb} MiB parts x {args.concurrency} at once; "
          f"{args.rounds} rounds, median\n")
    print(f"  {'upload':<12} {'MiB/s':>8} {'peak RSS MiB':>13}   wall s per round")
    for name, row in rows.items():
        rss = memory.get("peak_rss_mib") if name == "tokenforge" else memory.get(f"{name} peak_rss_mib")
        print(f"  {name:<12} {row['median_mib_s']:>8.1f} {rss if rss is not None else 'n/a':>13}   "
              + ", ".join(f"{w:.1f}" for w in row["wall_s"]))
    print(f"\n  ours: peak resident set +{memory.get('peak_rss_over_before_mib', 'n/a')} MiB over the process before "
          f"the upload; Python heap peak {memory['upload_tracemalloc_peak_mib']} MiB uploading, "
          f"{memory['verify_tracemalloc_peak_mib']} MiB verifying (streamed SHA-256 read-back) (tracemalloc)")
    ours_rate = rows["tokenforge"]["median_mib_s"]
    for name in ("aws default", "aws matched"):
        if name in rows:
            print(f"  ours / {name}: {ours_rate / rows[name]['median_mib_s']:.2f}x the throughput")
    if args.save:
        RESULTS_FILE.parent.mkdir(exist_ok=True)
        RESULTS_FILE.write_text(json.dumps({
            "bench": "backup", "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "parameters": vars(args) | {"aws": aws}, "rows": rows, "memory": memory}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
