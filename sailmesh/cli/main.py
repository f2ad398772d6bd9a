"""`sailmesh` entry point: dispatches each verb to its own module under sailmesh.cli."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from sailmesh import __version__

# verb -> (module under sailmesh.cli, one-line help). Each module defines
# `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("validate", "validate Istio config files (exit 0 when all valid)"),
    "analyze": ("analyze", "analyze config for cross-resource mistakes (istioctl analyze)"),
    "controlplane": ("controlplane", "run the control plane (config store, registry, xDS server)"),
    "agent": ("agent", "run the per-workload agent that starts and configures Envoy"),
    "up": ("up", "start the embedded mesh from a directory of config and workloads"),
    "down": ("down", "stop the running embedded mesh"),
    "demo": ("demo", "run a demo mesh (Bookinfo, or httpbin for the security tasks) in the foreground"),
    "apply": ("apply", "apply config to the running mesh (like kubectl apply)"),
    "delete": ("delete", "delete config from the running mesh"),
    "get": ("get", "list config in the running mesh"),
    "describe": ("describe_resource", "show one resource and what the mesh says about it (like kubectl describe)"),
    "proxy-status": ("proxy_status", "show every connected proxy and its sync state"),
    "version": ("version", "print the client, control plane and Envoy versions"),
    "x": ("x", "experimental: describe, flags, authz check, precheck"),
    "verify-install": ("verify_install", "check the running mesh: control plane, CA, proxies SYNCED, Envoy versions"),
    "bug-report": ("bug_report", "write one archive with the mesh's config, proxy dumps and logs (secrets redacted)"),
    "explain": ("explain", "simulate a request through the mesh's generated Envoy config, step by step"),
    "proxy-config": ("proxy_config", "show a proxy's Envoy config: clusters, listeners, routes, endpoints, ..."),
    "exec": ("exec", "run a command as a workload of the running mesh would (like kubectl exec)"),
    "dashboard": ("dashboard", "open the mesh dashboard (service graph, proxies, config) in a browser"),
    "kube-inject": ("kube_inject", "inject the sidecar into Kubernetes manifests offline (istioctl kube-inject)"),
    "install": ("install", "install the control plane and Istio's CRDs on a Kubernetes cluster (--profile)"),
    "manifest": ("manifest", "manifest generate: print the objects `install` applies, as YAML"),
    "uninstall": ("uninstall", "remove what `install` applied from a Kubernetes cluster"),
    "iptables": ("iptables", "install Istio's sidecar traffic capture (istio-iptables; what istio-init runs)"),
    "istio-iptables": ("iptables", "the same as `iptables`, under the name Istio's istio-init container runs"),
}


EPILOG = """examples:
  sailmesh demo                                   # Bookinfo with sidecars and an ingress gateway
  sailmesh proxy-status
  sailmesh explain --from productpage-v1-0 GET http://reviews:9080/reviews/0 -H end-user:jason
  sailmesh COMMAND --help                         # each command's options and examples"""


# Verbs that run another command: everything after the first `--` is that command (args.command), untouched
# by this parser (kubectl exec's form).
PASSTHROUGH = {"exec"}


def _available(module: str) -> bool:
    return importlib.util.find_spec(f"sailmesh.cli.{module}") is not None


def _untranslated_argparse() -> None:
    """argparse passes each of its strings through gettext, which looks for a message catalog on disk on every
    call (several stat calls each, ~80 per parser: 0.02-0.05 CPU s of a command) and, finding none (the usual
    case: Python ships no catalog for argparse), returns the string as it is. Where no catalog exists for this
    locale, say so once: argparse's strings go untranslated, as they would anyway."""
    import gettext

    domain = gettext.textdomain()
    if gettext.find(domain, gettext.bindtextdomain(domain)) is None:
        argparse._ = lambda message: message  # type: ignore[attr-defined]
        argparse.ngettext = lambda singular, plural, n: singular if n == 1 else plural  # type: ignore[attr-defined]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser. Only the verb `only` gets its module imported (and its arguments): `sailmesh --help` and an
    unknown verb list every verb from COMMANDS without importing any, so they start as fast as Python does."""
    parser = argparse.ArgumentParser(prog="sailmesh", description="An Istio-compatible service mesh.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sailmesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, (module, help_text) in COMMANDS.items():
        if verb != only:
            sub.add_parser(verb, help=help_text)  # listed in --help; never parsed (main picks `only` first)
            continue
        if not _available(module):
            continue
        mod = importlib.import_module(f"sailmesh.cli.{module}")
        doc = (mod.__doc__ or "").strip()
        # a module docstring with examples (after its first line) is the verb's --help description
        p = sub.add_parser(verb, help=help_text, description=doc if "\n" in doc else help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _untranslated_argparse()
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    passthrough: list[str] | None = None
    if argv and argv[0] in PASSTHROUGH and "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    if passthrough is not None:
        args.command = passthrough
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
