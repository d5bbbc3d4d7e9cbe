"""Start a Ray cluster of several nodes on this machine, for trying multi-node behaviour locally.

    python cluster/local_cluster.py --workers 2 --cpus-per-worker 1

It prints the address; in another terminal run an experiment against it:

    RAY_ADDRESS=<printed address> python examples/minimal_experiment/main.py

Ctrl-C stops the nodes this script started (and only those). Ray's files go to a private
temporary folder, so a Ray someone else runs on this machine is not touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker nodes besides the head (default 2)")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--head-cpus", type=float, default=0, help="CPUs on the head (default 0: it only schedules)")
    args = parser.parse_args()

    private = tempfile.mkdtemp(prefix="crc-")
    os.makedirs(os.path.join(private, "ray"), exist_ok=True)
    os.environ["RAY_TMPDIR"] = private  # before importing ray: keep /tmp/ray (the machine's) untouched

    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": args.head_cpus,
            "temp_dir": os.path.join(private, "ray"),
            "include_dashboard": False,
        },
    )
    for _ in range(args.workers):
        cluster.add_node(num_cpus=args.cpus_per_worker)
    cluster.wait_for_nodes()
    print(f"Ray cluster up: 1 head + {args.workers} worker node(s)")
    print(f"address: {cluster.address}")
    print(f"use it:  RAY_ADDRESS={cluster.address} python examples/minimal_experiment/main.py")
    print("Ctrl-C to stop it.", flush=True)

    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stop:
            time.sleep(0.5)
    finally:
        cluster.shutdown()
        shutil.rmtree(private, ignore_errors=True)
        print("cluster stopped")


if __name__ == "__main__":
    main()
