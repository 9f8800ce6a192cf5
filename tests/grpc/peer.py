"""A real gRPC server and client (grpcio) for tests/grpc.rs.

  peer.py serve            serves on 127.0.0.1, prints the port, runs until stdin closes
  peer.py call ADDR CASE N makes N concurrent calls of CASE, prints a JSON tally

Methods take and return raw bytes (no protobuf needed):
  /t.T/Echo    unary: answers the request
  /t.T/Sleep   unary: sleeps the request's milliseconds, then answers
  /t.T/Stream  server streaming: five messages, then hangs
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc


def sleep(request, context):
    time.sleep(int(request) / 1000)
    return b"late"


def stream(request, context):
    for i in range(5):
        yield b"message %d" % i
    # Hang until the client leaves.
    while context.is_active():
        time.sleep(0.01)


class Handler(grpc.GenericRpcHandler):
    def service(self, details):
        if details.method == "/t.T/Echo":
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)
        if details.method == "/t.T/Sleep":
            return grpc.unary_unary_rpc_method_handler(sleep)
        if details.method == "/t.T/Stream":
            return grpc.unary_stream_rpc_method_handler(stream)
        return None


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=100))
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


def one(channel, case):
    """Runs one call; returns what the client saw."""
    try:
        if case == "echo":
            reply = channel.unary_unary("/t.T/Echo")(b"hello", timeout=5)
            return "ok" if reply == b"hello" else "wrong reply"
        if case in ("unary_deadline_300ms", "unary_deadline_800ms"):
            timeout = 0.3 if case.endswith("300ms") else 0.8
            channel.unary_unary("/t.T/Sleep")(b"2000", timeout=timeout)
            return "ok"
        if case == "stream_deadline_800ms":
            got = list(channel.unary_stream("/t.T/Stream")(b"", timeout=0.8))
            return "ok %d" % len(got)
        if case == "stream_cancel_after_5":
            call = channel.unary_stream("/t.T/Stream")(b"", timeout=10)
            got = [next(call) for _ in range(5)]
            call.cancel()
            return "cancelled" if len(got) == 5 else "short"
    except grpc.RpcError as e:
        return e.code().name
    return "unknown case"


def call(addr, case, n):
    tally = {}
    lock = threading.Lock()
    with grpc.insecure_channel(addr) as channel:
        def run():
            seen = one(channel, case)
            with lock:
                tally[seen] = tally.get(seen, 0) + 1

        with futures.ThreadPoolExecutor(max_workers=n) as pool:
            for f in [pool.submit(run) for _ in range(n)]:
                f.result()
    print(json.dumps(tally), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        call(sys.argv[2], sys.argv[3], int(sys.argv[4]))
