"""`sailmesh exec NAME -n NS -- COMMAND...`: run a command as a workload of the running mesh would, like
`kubectl exec deploy/NAME -n NS -- ...`.

The command gets the environment the platform gives that workload's app (platform/workloads.py app_env): its
address, namespace, service account and `HTTP_PROXY`/`http_proxy` on its own address, which is its sidecar when
it has one (requests leave with its identity and under the mesh's policy) and the platform's plain forwarder
when it has none (straight to the destination workload, plaintext, no identity). curl, Python's urllib/aiohttp
and most HTTP clients honour that variable; a client that ignores it reaches nothing by service name.

  sailmesh exec productpage-v1 -- curl -s http://reviews:9080/reviews/0
  sailmesh exec sleep -n foo -- curl -s http://httpbin.bar:8000/headers
"""

from __future__ import annotations

import argparse
import os

from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError
from sailmesh.platform.state import InstanceRecord, MeshState, pid_alive

_PREFIXES = ("deploy/", "deployment/", "deployments/", "pod/", "pods/", "po/")
SIDECAR_CONTAINER = "istio-proxy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "sailmesh exec NAME [-n NS] [-c CONTAINER] [--state-dir DIR] -- COMMAND [ARGS...]"
    parser.add_argument("name", help="workload (deploy/NAME) or instance (pod/NAME-0) to run as")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("-c", "--container", default="",
                        help="accepted for kubectl's habit; the app's container is the only one")
    parser.add_argument("-i", "--stdin", action="store_true", help="accepted for kubectl's habit (stdin is passed)")
    parser.add_argument("-t", "--tty", action="store_true", help="accepted for kubectl's habit")
    add_state_dir(parser)
    parser.set_defaults(command=[])  # main() puts everything after `--` here




def find_instance(state: MeshState, name: str, namespace: str) -> InstanceRecord | None:
    """The instance a `kubectl exec` target means: `deploy/NAME` or `NAME` is the workload's first instance,
    `pod/NAME-0` or `NAME-0` that instance."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    in_ns = [i for i in state.instances if i.namespace == namespace]
    exact = next((i for i in in_ns if i.name == name), None)
    return exact or next((i for i in sorted(in_ns, key=lambda i: i.name) if i.workload == name), None)


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if not command:
        return fail("no command given: sailmesh exec NAME -n NS -- COMMAND [ARGS...]")
    if args.container == SIDECAR_CONTAINER:
        return fail(f"exec into the sidecar ({SIDECAR_CONTAINER}) is not supported; use `sailmesh proxy-status` "
                    "or the proxy's admin endpoint")
    try:
        state = running_mesh(args)
    except PlatformError as e:
        return fail(str(e))
    if not pid_alive(state.supervisor_pid):
        return fail(f"the mesh supervisor (pid {state.supervisor_pid}) is not running")
    inst = find_instance(state, args.name, args.namespace)
    if inst is None:
        known = sorted({f"{i.workload} ({i.name})" for i in state.instances if i.namespace == args.namespace})
        hint = f"; in {args.namespace}: {', '.join(known)}" if known else f"; namespace {args.namespace} has none"
        return fail(f'workload "{args.name}" not found in namespace "{args.namespace}"{hint}')
    env = {**os.environ, **inst.env}
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        return fail(f'exec "{command[0]}": {e.strerror or e}', 127 if isinstance(e, FileNotFoundError) else 126)
    return 0  # pragma: no cover - execvpe does not return
