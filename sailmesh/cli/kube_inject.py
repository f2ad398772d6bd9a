"""`sailmesh kube-inject -f FILE`: inject the sidecar into manifests offline and print them (istioctl kube-inject).

Examples:
  sailmesh kube-inject -f deployment.yaml | kubectl apply -f -
  kubectl get deploy reviews -o yaml | sailmesh kube-inject -f -

Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs get the same
containers, volumes, labels and annotations as the injecting webhook gives a pod; other objects pass through.
"""

from __future__ import annotations

import argparse
import sys

from sailmesh.api.parse import MAX_FILE_BYTES
from sailmesh.cli.common import fail
from sailmesh.errors import ParseError
from sailmesh.webhook.inject import InjectionConfig
from sailmesh.webhook.kubeinject import inject_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = InjectionConfig()
    parser.add_argument("-f", "--filename", required=True, metavar="FILE", help="a YAML file, or - for stdin")
    parser.add_argument("-o", "--output", default="-", metavar="FILE", help="where to write (default: stdout)")
    parser.add_argument("--namespace", default="default", help="the namespace of objects that name none")
    parser.add_argument("--image", default=defaults.image, help="the proxy image")
    parser.add_argument("--discovery-address", default=defaults.discovery_address, metavar="HOST:PORT",
                        help="where the proxies reach the control plane")
    parser.add_argument("--revision", default=defaults.revision)


def run(args: argparse.Namespace) -> int:
    try:
        if args.filename == "-":
            text = sys.stdin.read(MAX_FILE_BYTES + 1)
        else:
            with open(args.filename, encoding="utf-8") as fh:
                text = fh.read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            return fail(f"{args.filename}: larger than {MAX_FILE_BYTES} bytes")
        cfg = InjectionConfig(image=args.image, discovery_address=args.discovery_address, revision=args.revision)
        warnings: list[str] = []
        out = inject_text(text, cfg, args.namespace, args.filename, warnings)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
    except (OSError, ParseError) as e:
        return fail(str(e))
    if args.output == "-":
        sys.stdout.write(out)
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(out)
    return 0
