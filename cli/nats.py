"""``flarebus nats``: run the embedded NATS server (JetStream on) in the foreground.

For trying flarebus without installing a server: it prints the URL, writes it
to ``.flarebus/nats.url`` (so other flarebus commands in this directory find
it without flags) and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from flarebus.cli.options import URL_FILE_NAME, add_data_dir_option, data_dir, port


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "nats", help="run the embedded NATS server in the foreground", description=__doc__,
        epilog="examples:\n"
               "  flarebus nats                        # then, in this directory: flarebus engine\n"
               "  flarebus nats --port 4222 --data-dir /var/lib/flarebus")
    add_data_dir_option(parser, "JetStream storage and the URL file")
    parser.add_argument("--port", type=port, default=-1, help="client port (default: a free one)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flarebus.nats_server import EmbeddedNats

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    args.data_dir = data_dir(args)
    with EmbeddedNats(args.data_dir, port=args.port, partitioned=True) as server:
        url_file = args.data_dir / URL_FILE_NAME
        url_file.write_text(server.url + "\n")
        try:  # from the first line printed on: a Ctrl-C as soon as it is read is a clean stop
            print(f"nats-server running at {server.url} (JetStream in {args.data_dir}/"
                  "jetstream); Ctrl-C stops it", file=sys.stderr, flush=True)
            print(server.url, flush=True)
            while not stop.wait(0.5):
                if server.process is None or server.process.poll() is not None:
                    print("nats-server exited:\n" + server.log_tail(), file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
        finally:
            url_file.unlink(missing_ok=True)
    return 0
