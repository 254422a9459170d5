"""Benchmark: audited flows per second that the Hubble Relay client decodes in follow mode.

    python scripts/bench_relay.py [--rate 55000] [--seconds 10] [--transport h2|grpcio] [--capacity 65535]

(after ``make layout``). A child process runs a simulated cluster (the seed scenario, db in audit mode) and its
simulated Hubble Relay, which generates ``--rate`` audited flows a second (plus 5% allowed flows that the Relay's
filter drops) and streams them with pre-serialized messages. This process follows them with the product client
(``_hubble_relay.RelayClient``: gRPC, server-side filter, conversion to FlowRecord) for ``--seconds`` and prints:

* the sustained rate of FlowRecords, the CPU each process used, and the loss the client caused (the Relay's
  lost_events when the follower falls a ring buffer behind; 0 when the client keeps up);
* in the same run, on the same serialized messages, the rate of a plain protobuf decode loop and of a
  MessageToDict-based conversion (the way a JSON-minded client would go), and the ratios.

Nothing is asserted: the numbers are printed. The Relay's own ceiling is printed too (``relay generated``): when it is
below ``--rate``, the machine is the limit, not the client. The grpcio transport sends about 15,000 messages a second
here, so ``--transport grpcio`` measures the server; ``h2`` (the default) packs many messages per HTTP/2 frame.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / ".cache" / "collections")]


def serve(args: argparse.Namespace) -> int:
    """The child: cluster + relay. Prints the address (JSON); on "go" generates until the next line, prints the
    counters, and serves the ring buffers until stdin closes."""
    from simcluster.cluster import SimCluster
    from simcluster.scenario import seed

    state = tempfile.mkdtemp(prefix="bench-relay-")
    cluster = SimCluster("bench", state_dir=state, agent_boot_seconds=0.05)
    cluster.start()
    try:
        seed(cluster)
        db = next(r for r in cluster.endpoints.values() if r.namespace == "shop" and r.pod_labels.get("app") == "db")
        cluster.agent(db.node).exec(["cilium-dbg", "endpoint", "config", str(db.id), "PolicyAuditMode=Enabled"])
        per_minute = args.rate * 60
        cluster.traffic = [
            {"from": "shop/frontend", "to": "shop/db", "port": 5432, "protocol": "TCP", "per_minute": per_minute},
            {"from": "shop/backend", "to": "shop/db", "port": 5432, "protocol": "TCP", "per_minute": per_minute // 20},
        ]
        relay = cluster.start_hubble(noise=False, transport=args.transport, capacity=args.capacity, tick=0.02)
        relay.pause()
        print(json.dumps({"address": relay.address}), flush=True)
        command = sys.stdin.readline().strip()
        if command == "go":
            generated = relay.generated
            started = time.monotonic()
            relay.resume()
            sys.stdin.readline()
            elapsed = time.monotonic() - started
            relay.pause()
            print(json.dumps({"generated": relay.generated - generated, "seconds": elapsed}), flush=True)
            sys.stdin.readline()  # the parent reads the ring buffers, then closes
        relay.stop()
    finally:
        cluster.stop()
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(function: object, items: list[bytes], minimum: float = 1.0) -> float:
    """Items per second of ``function`` over ``items``, repeated for at least ``minimum`` seconds."""
    done, started = 0, time.perf_counter()
    while True:
        for item in items:
            function(item)  # type: ignore[operator]
        done += len(items)
        elapsed = time.perf_counter() - started
        if elapsed >= minimum:
            return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=55000, help="audited flows a second the relay generates")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the follow window")
    parser.add_argument("--transport", choices=("h2", "grpcio"), default="h2")
    parser.add_argument("--capacity", type=int, default=65535, help="ring buffer per node (Hubble: 4095 default)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)

    from google.protobuf import json_format

    from ansible_collections.netpol.cilium.plugins.module_utils import _flows
    from ansible_collections.netpol.cilium.plugins.module_utils import _hubble_relay as hr
    from ansible_collections.netpol.cilium.plugins.module_utils._hubble_pb import flow_view_pb2, observer_pb2

    child = subprocess.Popen([sys.executable, __file__, "--serve", "--rate", str(args.rate), "--transport",
                              args.transport, "--capacity", str(args.capacity)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        address = json.loads(child.stdout.readline())["address"]
        client = hr.RelayClient(address, timeout=10)
        client.connect()
        flows = 0
        first = last = 0.0
        events = client.events(follow=True, duration=args.seconds + 2)
        child.stdin.write("go\n")
        child.stdin.flush()
        cpu_client, cpu_relay = cpu_seconds(os.getpid()), cpu_seconds(child.pid)
        stop_at = time.monotonic() + args.seconds
        for event in events:
            if isinstance(event, _flows.FlowRecord):
                flows += 1
                if flows == 1:
                    first = time.perf_counter()
                last = time.perf_counter()
                if not flows % 4096 and time.monotonic() >= stop_at:
                    break
        cpu_client, cpu_relay = cpu_seconds(os.getpid()) - cpu_client, cpu_seconds(child.pid) - cpu_relay
        events.close()
        child.stdin.write("stop\n")
        child.stdin.flush()
        produced = json.loads(child.stdout.readline())
        stats = client.stats

        # the same messages, offline: raw bytes from the relay's ring buffer
        channel = __import__("grpc").insecure_channel(address)
        raw_call = channel.unary_stream(hr.GET_FLOWS, request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
                                        response_deserializer=None)
        request = observer_pb2.GetFlowsRequest(number=20000)
        request.whitelist.extend(hr.build_filters())
        blobs = list(raw_call(request, timeout=60))[1:]  # without the node status message
        channel.close()
        client.close()
        child.stdin.close()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
        child.wait(30)

    decode = observer_pb2.GetFlowsResponse.FromString
    decode_view = flow_view_pb2.GetFlowsResponseView.FromString
    converter = hr.FlowConverter()

    def product(blob: bytes) -> object:  # what the client does with each message
        response = decode_view(blob)
        return converter(response.flow, response.node_name, blob)

    def message_to_dict(blob: bytes) -> object:
        data = json_format.MessageToDict(decode(blob), preserving_proto_field_name=True)
        flow = data["flow"]
        ip = flow.get("IP", {})
        return (_flows.peer_from_dict(flow.get("source", {}), ip.get("source"), flow.get("source_names")),
                _flows.peer_from_dict(flow.get("destination", {}), ip.get("destination"),
                                      flow.get("destination_names")), flow.get("verdict"), flow.get("time"))

    plain = rate(decode, blobs)
    converted = rate(product, blobs)
    baseline = rate(message_to_dict, blobs[:5000])
    window = max(last - first, 1e-9)
    sustained = (flows - 1) / window if flows > 1 else 0.0
    relay_rate = produced["generated"] / max(produced["seconds"], 1e-9)
    print(f"follow window        {window:.1f} s, transport {args.transport}, ring buffer {args.capacity} per node")
    print(f"relay generated      {relay_rate:,.0f} flows/s (target {args.rate:,} audited + 5% allowed, filtered out)")
    print(f"client decoded       {flows:,} audited flows -> FlowRecord")
    print(f"sustained rate       {sustained:,.0f} flows/s (gRPC + protobuf + FlowRecord, follow mode)")
    print(f"CPU in the window    client {cpu_client / window:.2f} cores, relay {cpu_relay / window:.2f} cores "
          f"(of {os.cpu_count()})")
    print(f"client-caused loss   {stats.lost_events} flows ({stats.lost_messages} lost_events messages), "
          f"reconnects {stats.reconnects}")
    print(f"offline, same {len(blobs):,} messages:")
    print(f"  protobuf decode only        {plain:,.0f} msgs/s")
    print(f"  view decode + FlowConverter {converted:,.0f} msgs/s (the client's path)")
    print(f"  decode + MessageToDict path {baseline:,.0f} msgs/s")
    print(f"ratios: streamed / MessageToDict path {sustained / baseline:.1f}x; FlowConverter / MessageToDict "
          f"{converted / baseline:.1f}x; streamed / plain decode {sustained / plain:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
