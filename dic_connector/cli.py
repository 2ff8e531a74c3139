"""The ``dic`` command line.

::

    dic node init --dir DIR --index I (--peers F --pki DIR | --standalone) [--database-url U]
                                                            keyring (0600) + config file
    dic node migrate --config FILE                          Alembic upgrade to head
    dic node serve --config FILE                            run the control API
    dic admin add-principal --config FILE --name N --role R [--site S] [--signing-key KEY]
    dic admin outbox list --config FILE [--peer I]          parked peer messages (dead letters)
    dic admin outbox replay|drop --config FILE (ID... | --all [--peer I])
    dic admin audit peers --config FILE                     peers' audit heads recorded here;
                                                            exit 1 if one is flagged
    dic admin audit acknowledge --config FILE PEER          clear a peer's detected mismatch
    dic pki init --dir DIR                                  the deployment CA
    dic pki issue node --dir DIR --index I [--host H ...]   a node's certificate and key
    dic pki issue connector --dir DIR --site S              a site connector's certificate
    dic keys new --out FILE                                 an Ed25519 signing key (0600)
    dic keys public --key FILE                              its public half, as add-principal takes it
    dic study create|list, dic analyze ..., dic requests list|show|cancel, dic result ID
                                                            analyze, result: --plot F.png|.svg
    dic approve|deny ID..., dic policy create|list|revoke, dic datasets list|delete,
    dic analyses, dic whoami, dic verify-audit,             people's commands over a profile
    dic audit-peers                                         (:mod:`dic_connector.client.profile`)
    dic audit verify --config FILE                          exit 1 if the chain is broken
    dic demo [--dir DIR] [--keep] [--json] [--plots DIR]    the embedded demo
    dic connector serve --config FILE                       the hospital's connector service
    dic connector pull --config FILE [--dataset X] [--now]  one run now, in the foreground
    dic connector migrate --config FILE                     the connector's state database
    dic connector token                                     a new operator token and its hash

Configuration comes from the file and ``DIC_*`` environment variables (see
:mod:`dic_connector.node.config`; the connector's are ``DIC_CONNECTOR_*``, see
:mod:`dic_connector.connector.config`). Errors are printed as one line naming the problem; the
exit code is 2 for configuration errors, 1 for a failed check (``connector pull``: see
:mod:`dic_connector.connector.commands`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dic_connector.errors import DicError
from dic_connector.vocabulary import Role

if TYPE_CHECKING:
    from dic_connector.node.config import NodeConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dic", description="dic-connector node and tools")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the embedded three-node demo on this machine")
    demo.add_argument("--dir", type=Path, default=None,
                      help="work here (absent or empty) instead of a temporary directory")
    demo.add_argument("--keep", action="store_true",
                      help="keep the workspace (data, deployment, databases, node logs) and "
                           "each person's signing key and client profile, to go on with the "
                           "CLI or the nodes' web pages")
    demo.add_argument("--json", action="store_true",
                      help="progress to stderr; the whole report as one JSON object on the "
                           "last line of stdout")
    demo.add_argument("--plots", type=Path, default=None, metavar="DIR",
                      help="also draw the results that have a figure (Kaplan-Meier by ECOG, "
                           "frequency bars, ...) as PNG files in DIR (needs matplotlib)")

    node = sub.add_parser("node", help="set up and run a compute node").add_subparsers(
        dest="action", required=True)
    init = node.add_parser(
        "init", help="create a node's keyring and config file",
        epilog="example: dic node init --dir /etc/dic --index 0 --peers peers.yaml --pki pki "
               "--database-url postgresql://dic@db/node0")
    init.add_argument("--dir", type=Path, required=True, help="where the files are written")
    init.add_argument("--index", type=int, required=True, choices=(0, 1, 2),
                      help="this node's index among the three")
    init.add_argument("--database-url", default=None,
                      help="SQLite (default: a file in --dir) or postgresql://...")
    init.add_argument("--peers", type=Path, default=None,
                      help="YAML list of the three nodes in index order: api_url (https), "
                           "mpc_host, mpc_port, name")
    init.add_argument("--pki", type=Path, default=None,
                      help="the directory `dic pki` wrote: ca.pem and node-<index>.pem/.key")
    init.add_argument("--listen-host", default="127.0.0.1",
                      help="address the control API binds to (0.0.0.0: every interface)")
    init.add_argument("--standalone", action="store_true",
                      help="a node without peers that serves the API alone (never computes)")
    for action, text in (("migrate", "migrate the node database to the newest schema"),
                         ("serve", "run the node's control API")):
        node.add_parser(action, help=text).add_argument("--config", type=Path, required=True)

    admin = sub.add_parser("admin", help="principals and tokens, the outbox, the peers' "
                                          "audit heads").add_subparsers(
        dest="action", required=True)
    add = admin.add_parser("add-principal", help="create a principal and print its token")
    add.add_argument("--config", type=Path, required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--site", default=None)
    add.add_argument("--signing-key", default=None,
                     help="the person's Ed25519 public key: base64, PEM, base64 DER, or a file "
                          "holding one (required for researchers and data owners)")
    add.add_argument("--token-days", type=int, default=90)
    outbox = admin.add_parser(
        "outbox", help="peer messages parked after a refusal or the last retry").add_subparsers(
        dest="outbox_action", required=True)
    for action, text in (("list", "list the parked messages"),
                         ("replay", "deliver parked messages again"),
                         ("drop", "give parked messages up for good")):
        command = outbox.add_parser(action, help=text)
        command.add_argument("--config", type=Path, required=True)
        command.add_argument("--peer", type=int, choices=(0, 1, 2), default=None,
                             help="only the messages to this node index")
        if action != "list":
            command.add_argument("ids", nargs="*", type=int, help="message ids (from list)")
            command.add_argument("--all", action="store_true",
                                 help="every parked message (of --peer, if given)")

    peer_audit = admin.add_parser(
        "audit", help="the peers' audit heads recorded here, and detected truncations or "
                      "rewrites of their logs").add_subparsers(dest="audit_action", required=True)
    peer_audit.add_parser("peers", help="list each peer's recorded head and open mismatches"
                          ).add_argument("--config", type=Path, required=True)
    acknowledge = peer_audit.add_parser(
        "acknowledge", help="an operator has looked at a peer's mismatch: agree to plans again")
    acknowledge.add_argument("--config", type=Path, required=True)
    acknowledge.add_argument("peer", help="the peer's name, e.g. node-1")

    pki = sub.add_parser("pki", help="the deployment CA and certificates").add_subparsers(
        dest="action", required=True)
    pki_init = pki.add_parser("init", help="create the deployment CA (ca.pem, ca.key)",
                              epilog="example: dic pki init --dir pki")
    pki_init.add_argument("--dir", type=Path, required=True, help="where the PKI lives")
    pki_init.add_argument("--name", default="dic-connector deployment CA")
    pki_init.add_argument("--days", type=int, default=3650)
    pki_init.add_argument("--force", action="store_true", help="replace an existing CA")
    issue = pki.add_parser("issue", help="issue a certificate").add_subparsers(
        dest="kind", required=True)
    issue_node = issue.add_parser(
        "node", help="node-<i>: TLS server and client", epilog="example: dic pki issue node "
        "--dir pki --index 0 --host node0.dic.example --host 10.0.0.10")
    issue_node.add_argument("--index", type=int, required=True, choices=(0, 1, 2))
    issue_node.add_argument("--host", action="append", default=[],
                            help="a host name or IP address the node is reached at "
                                 "(repeatable)")
    issue_connector = issue.add_parser(
        "connector", help="connector.<site>: uploads of that site",
        epilog="example: dic pki issue connector --dir pki --site tm")
    issue_connector.add_argument("--site", required=True)
    for parser_ in (issue_node, issue_connector):
        parser_.add_argument("--dir", type=Path, required=True, help="where the CA is")
        parser_.add_argument("--days", type=int, default=825)
        parser_.add_argument("--force", action="store_true",
                             help="replace an existing certificate and key")

    keys = sub.add_parser("keys", help="a person's Ed25519 signing key").add_subparsers(
        dest="action", required=True)
    keys.add_parser("new", help="write a new signing key (PEM, mode 0600)",
                    epilog="example: dic keys new --out alice.pem").add_argument(
        "--out", type=Path, required=True)
    keys.add_parser("public", help="print a key's public half").add_argument(
        "--key", type=Path, required=True)

    _people_commands(sub)

    connector = sub.add_parser(
        "connector", help="the hospital-side connector: pull, share, keep datasets current"
    ).add_subparsers(dest="action", required=True)
    serve = connector.add_parser("serve", help="run the connector service (schedules, /metrics)")
    serve.add_argument("--config", type=Path, required=True, help="connector.yaml")
    serve.add_argument("--no-migrate", action="store_true",
                       help="do not upgrade the state database first (e.g. a Helm Job does)")
    pull = connector.add_parser("pull", help="run datasets once now, in the foreground")
    pull.add_argument("--config", type=Path, required=True, help="connector.yaml")
    pull.add_argument("--dataset", action="append", default=[],
                      help="only this dataset (repeatable); default: every configured one")
    pull.add_argument("--now", action="store_true",
                      help="run scheduled datasets even when they are not due")
    pull.add_argument("--no-migrate", action="store_true",
                      help="do not upgrade the state database first")
    connector.add_parser("migrate", help="upgrade the connector's state database").add_argument(
        "--config", type=Path, required=True, help="connector.yaml")
    connector.add_parser("token", help="print a new operator token and its SHA-256 "
                                       "(operator_token_sha256)")

    audit = sub.add_parser("audit", help="the audit chain").add_subparsers(
        dest="action", required=True)
    audit.add_parser("verify", help="recompute the hash chain").add_argument(
        "--config", type=Path, required=True)
    return parser


def _init_node(args: argparse.Namespace) -> Path:
    """Write a node's keyring and a config it can serve with; the config's path.

    With ``--peers`` and ``--pki`` the node computes (TLS and its two peers); with
    ``--standalone`` it serves the API alone; without either it is refused, since
    ``serve`` would refuse it (:func:`~dic_connector.node.admin.check_serve`)."""
    from urllib.parse import urlsplit

    from dic_connector.node.admin import check_serve
    from dic_connector.node.config import parse_config
    from dic_connector.trust.keyring import NodeKeyring, write_keyring

    directory, index = args.dir, args.index
    keyring_path = directory / f"node-{index}.keyring.json"
    if keyring_path.exists():
        raise DicError(f"{keyring_path} exists; refusing to overwrite a node key")
    data: dict[str, object] = {
        "node_index": index,
        "database_url": args.database_url
        or f"sqlite:///{(directory / f'node-{index}.db').resolve()}",
        "keyring_file": str(keyring_path.resolve()),
        "listen_host": args.listen_host, "listen_port": 8443 + index,
    }
    if (args.peers is None) != (args.pki is None):
        raise DicError("--peers and --pki go together: a node that computes needs both")
    if args.peers is not None:
        try:
            peers = yaml.safe_load(args.peers.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise DicError(f"--peers {args.peers}: cannot be read ({type(exc).__name__})"
                           ) from None
        pki = args.pki.resolve()
        data["tls"] = {"ca_cert": str(pki / "ca.pem"), "cert": str(pki / f"node-{index}.pem"),
                       "key": str(pki / f"node-{index}.key")}
        data["peers"] = peers
        if isinstance(peers, list) and len(peers) == 3 and isinstance(peers[index], dict):
            port = urlsplit(str(peers[index].get("api_url", ""))).port
            data["listen_port"] = port or 443
    elif args.standalone:
        data["standalone"] = True
    config = parse_config(data)  # errors name the key, before anything is written
    check_serve(config)  # and the certificate, naming its file
    directory.mkdir(parents=True, exist_ok=True)
    write_keyring(keyring_path, NodeKeyring.generate(f"node-{index}"))
    config_path: Path = directory / f"node-{index}.yaml"
    # 0600: a PostgreSQL database_url carries its password
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(yaml.safe_dump(data, sort_keys=False))
    return config_path


async def _serve(config: NodeConfig) -> None:
    from aiohttp import web

    from dic_connector.node.admin import check_serve, node_keyring
    from dic_connector.node.api import create_app

    check_serve(config)
    if not logging.getLogger().handlers:  # the access log and the node's own, to stderr
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiohttp's access log prints the request line, query string included: ours does not
    runner = web.AppRunner(create_app(config, keyring=node_keyring(config)), access_log=None)
    await runner.setup()
    ssl_context = None if config.tls is None else config.tls.server_context(
        require_client_cert=False)
    await web.TCPSite(runner, config.listen_host, config.listen_port,
                      ssl_context=ssl_context).start()
    scheme = "http" if ssl_context is None else "https"
    print(f"{config.node_id}: control API on {scheme}://{config.listen_host}:"
          f"{config.listen_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
        loop.add_signal_handler(signal.SIGTERM, stop.set)  # e.g. `dic demo`, Kubernetes
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    print(f"{config.node_id}: stopped", flush=True)


def _run(args: argparse.Namespace) -> int:
    # Each command imports what it needs: `dic keys`/`pki` and the people's commands never
    # load the node's store, migrations and SQLAlchemy (most of a fresh process's start).
    if args.command == "demo":
        from dic_connector.dev.demo import main as demo_main

        return demo_main(args.dir, args.keep, as_json=args.json, plots_dir=args.plots)
    if args.command == "connector":
        return _connector(args)
    if args.command == "pki":
        return _pki(args)
    if args.command in PEOPLE_COMMANDS:
        return asyncio.run(_person_command(args))
    if args.command == "keys":
        return _keys(args)
    if args.command == "node" and args.action == "init":
        print(_init_node(args))
        return 0
    from dic_connector.node import admin
    from dic_connector.node.config import load_config

    config = load_config(args.config)
    if args.command == "node" and args.action == "migrate":
        print(f"{config.node_id}: schema at {asyncio.run(admin.migrate_database(config))}")
    elif args.command == "node" and args.action == "serve":
        asyncio.run(_serve(config))
    elif args.command == "admin" and args.action == "outbox":
        return _outbox(config, args)
    elif args.command == "admin" and args.action == "audit":
        return _peer_audit(config, args)
    elif args.command == "admin":
        created = asyncio.run(admin.add_principal(
            config, args.name, Role(args.role), args.site, args.signing_key,
            token_days=args.token_days))
        print(f"created {created.role.value} {created.name}; token (shown once): {created.token}")
    elif args.command == "audit":
        ok, message = asyncio.run(admin.verify_audit(config))
        print(message)
        return 0 if ok else 1
    return 0


def _peer_audit(config: NodeConfig, args: argparse.Namespace) -> int:
    from dic_connector.node import admin

    if args.audit_action == "acknowledge":
        closed = asyncio.run(admin.acknowledge_peer_audit(config, args.peer))
        print(f"{config.node_id}: acknowledged {closed} mismatch(es) of {args.peer}")
        return 0
    statuses = asyncio.run(admin.peer_audit_status(config))
    for status in statuses:
        print(status.describe())
    return 1 if any(s.flagged for s in statuses) else 0


def _outbox(config: NodeConfig, args: argparse.Namespace) -> int:
    from dic_connector.node import admin

    parked = asyncio.run(admin.parked_messages(config, args.peer))
    if args.outbox_action == "list":
        for message in parked:
            print(message.describe())
        print(f"{config.node_id}: {len(parked)} parked message(s)")
        return 0
    if bool(args.ids) == args.all:
        raise DicError(f"outbox {args.outbox_action}: give message ids or --all, not both")
    ids = [m.id for m in parked] if args.all else list(args.ids)
    done = asyncio.run(admin.settle_parked(config, args.outbox_action, ids))
    verb = "replayed" if args.outbox_action == "replay" else "dropped"
    print(f"{config.node_id}: {verb} {len(done)} message(s)")
    return 0


def _people_commands(sub: Any) -> None:
    """The researcher's, data owner's and admin's commands (:mod:`dic_connector.client`)."""
    def person(name: str, text: str, example: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=text,
                                                         epilog=f"example: {example}")
        parser.add_argument("--profile", type=Path, default=None,
                            help="your profile (default $DIC_PROFILE or "
                                 "~/.config/dic/profile.yaml)")
        return parser

    def formats(parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--json", dest="fmt", action="store_const", const="json",
                           default="table", help="one JSON object")
        group.add_argument("--csv", dest="fmt", action="store_const", const="csv",
                           help="name,value rows")

    def plot(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--plot", type=Path, default=None, metavar="FILE",
                            help="also draw the result into FILE (.png or .svg): Kaplan-Meier "
                                 "curves, histograms, frequency and contingency bars, "
                                 "quantiles; needs matplotlib: pip install "
                                 "'dic-connector[plots]'")

    study = person("study", "your studies (researchers)",
                   'dic study create --title "Adrenal SBRT"')
    study.add_argument("action", choices=("create", "list"))
    study.add_argument("--title", default=None)
    study.add_argument("--description", default="")

    analyze = person("analyze", "sign and submit an analysis, wait for all three nodes, print "
                     "the result they agree on", "dic analyze mean --column age --datasets "
                     'tm,tr --study "Adrenal SBRT"')
    analyze.add_argument("analysis", help="see `dic analyses`")
    analyze.add_argument("--column", default=None, help="the typed column it reads")
    analyze.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="another parameter (VALUE as JSON if it parses)")
    analyze.add_argument("--datasets", required=True,
                         help="comma-separated: site, site/name or dataset id")
    analyze.add_argument("--study", required=True, help="a study id or title (created if new)")
    analyze.add_argument("--version", default=None,
                         help="the analysis version (default: the newest the node offers)")
    analyze.add_argument("--no-wait", action="store_true", help="print the request id only")
    analyze.add_argument("--timeout", type=float, default=600, help="seconds to wait")
    formats(analyze)
    plot(analyze)

    requests = person("requests", "requests you may see", "dic requests show <id>")
    requests.add_argument("action", choices=("list", "show", "cancel"))
    requests.add_argument("id", nargs="?", default=None)

    result = person("result", "the result of a completed request (all three nodes compared)",
                    "dic result <request id> --json")
    result.add_argument("id")
    formats(result)
    plot(result)

    for name, text in (("approve", "approve requests of your site, after reading what each "
                                   "opens (data owners)"),
                       ("deny", "deny requests of your site (data owners)")):
        decide = person(name, text, f"dic {name} <request id> --yes")
        decide.add_argument("ids", nargs="+")
        decide.add_argument("--yes", action="store_true",
                            help="sign without asking (needed off a terminal)")

    policy = person("policy", "standing approvals of your site (data owners)",
                    "dic policy create --analyses count,mean --columns age --days 90")
    policy.add_argument("action", choices=("create", "list", "revoke"))
    policy.add_argument("id", nargs="?", default=None, help="the policy to revoke")
    policy.add_argument("--analyses", default=None, help="comma-separated analysis names")
    policy.add_argument("--columns", default="*", help="comma-separated columns, or *")
    policy.add_argument("--min-cell-count", type=int, default=5)
    policy.add_argument("--days", type=int, default=90)
    policy.add_argument("--perturbation", default=None, metavar="D,V[,js]",
                        help="the requests it approves open cell-key perturbed counts "
                             "(max noise D, variance V, no count in 1..js)")
    policy.add_argument("--min-subset-size", type=int, default=None,
                        help="each contributing site needs this many rows in the query set "
                             "(at least the deployment's)")
    policy.add_argument("--max-levels", type=int, default=None,
                        help="refuse tables and groupings with more levels/cells "
                             "(at most the deployment's)")
    policy.add_argument("--ledger", action="store_const", const=True, default=None,
                        help="check the requests it approves against the release ledger "
                             "even where the deployment does not")

    datasets = person("datasets", "datasets (metadata only); owners delete theirs",
                      "dic datasets list")
    datasets.add_argument("action", choices=("list", "delete"))
    datasets.add_argument("id", nargs="?", default=None)
    datasets.add_argument("--yes", action="store_true")
    datasets.add_argument("--json", dest="fmt", action="store_const", const="json",
                          default="table")

    person("analyses", "the analyses catalogue: what each computes and opens",
           "dic analyses")
    person("whoami", "your profile (without tokens) and whether each node answers",
           "dic whoami")
    person("verify-audit", "every node recomputes its audit chain (admins)",
           "dic verify-audit")
    person("audit-peers", "what each node witnessed of its peers' audit logs; exit 1 if "
                          "one is flagged (admins; over the API, unlike `dic admin audit "
                          "peers`, which reads this node's database)", "dic audit-peers")


PEOPLE_COMMANDS = ("study", "analyze", "requests", "result", "approve", "deny", "policy",
                   "datasets", "analyses", "whoami", "verify-audit",
                   "audit-peers")


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    import json

    out: dict[str, Any] = {} if args.column is None else {"column": args.column}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DicError(f"--param {item!r}: expected KEY=VALUE")
        try:  # decimals become strings ("0.25"): a signed request carries no floats
            out[key] = json.loads(value, parse_float=str)
        except ValueError:
            out[key] = value
    return out


def perturbation_option(text: str | None) -> dict[str, Any] | None:
    """``--perturbation D,V[,js]`` as a policy's perturbation (None: not given)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        out: dict[str, Any] = {"max_noise": int(parts[0]), "variance": float(parts[1])}
        if len(parts) == 3:
            out["js"] = int(parts[2])
    except ValueError:
        raise DicError(f"--perturbation {text!r}: expected D,V or D,V,js (e.g. 3,2.0)") \
            from None
    return out


def _confirm(assume_yes: bool) -> Callable[[str], bool]:
    """Ask on the terminal (``--yes``: don't); off a terminal without ``--yes``, refuse at
    once, before anything is fetched or waited for."""
    if not assume_yes and not sys.stdin.isatty():
        raise DicError("not a terminal: pass --yes to sign without being asked")

    def ask(question: str) -> bool:
        if assume_yes:
            return True
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

    return ask


async def _person_command(args: argparse.Namespace) -> int:
    import json

    from dic_connector.client import commands as c
    from dic_connector.client.profile import connect, load_profile, profile_json, profile_path
    from dic_connector.vocabulary import Decision

    profile = load_profile(profile_path(args.profile))
    out = sys.stdout
    async with connect(profile) as me:
        command = args.command
        if command == "whoami":
            print(json.dumps(profile_json(profile), indent=2), file=out)
            for client in me.clients():
                print(f"{client.node}: {(await client.ready()).get('status')}", file=out)
        elif command == "analyses":
            await c.list_analyses(me, out)
        elif command == "datasets" and args.action == "list":
            await c.list_datasets(me, out, args.fmt)
        elif command == "datasets":
            if args.id is None:
                raise DicError("dic datasets delete needs the dataset id")
            if not _confirm(args.yes)(f"erase every version of dataset {args.id} on all "
                                      "three nodes?"):
                return 1
            await c.delete_dataset(me, args.id, out)
        elif command == "study" and args.action == "create":
            if not args.title:
                raise DicError("dic study create needs --title")
            await c.create_study(me, args.title, args.description, out)
        elif command == "study":
            await c.list_studies(me, out)
        elif command == "analyze":
            await c.analyze(me, args.analysis, [d for d in args.datasets.split(",") if d],
                            _parameters(args), args.study, out, wait=not args.no_wait,
                            fmt=args.fmt, timeout_s=args.timeout, version=args.version,
                            plot=args.plot)
        elif command == "requests" and args.action == "list":
            await c.list_requests(me, out)
        elif command == "requests":
            if args.id is None:
                raise DicError(f"dic requests {args.action} needs the request id")
            if args.action == "show":
                await c.show_request(me, args.id, out)
            else:
                await c.cancel_request(me, args.id, out)
        elif command == "result":
            await c.show_result(me, args.id, out, args.fmt, args.plot)
        elif command in ("approve", "deny"):
            decision = Decision.APPROVE if command == "approve" else Decision.DENY
            confirm = _confirm(args.yes)
            await c.decide(me, args.ids, decision, out, confirm)
        elif command == "policy" and args.action == "create":
            if not args.analyses:
                raise DicError("dic policy create needs --analyses")
            await c.create_policy(me, args.analyses.split(","), args.columns.split(","),
                                  args.min_cell_count, args.days, out,
                                  perturbation_option(args.perturbation),
                                  args.min_subset_size, args.max_levels, args.ledger)
        elif command == "policy" and args.action == "list":
            await c.list_policies(me, out)
        elif command == "policy":
            if args.id is None:
                raise DicError("dic policy revoke needs the policy id")
            await c.revoke_policy(me, args.id, out)
        elif command == "verify-audit":
            return 0 if await c.verify_audit(me, out) else 1
        elif command == "audit-peers":
            return 0 if await c.audit_peers(me, out) else 1
    return 0


def _pki(args: argparse.Namespace) -> int:
    from dic_connector.trust import pki

    if args.action == "init":
        ca = pki.init_ca(args.dir, name=args.name, days=args.days, force=args.force)
        print(f"deployment CA: {ca.describe()}\nGive {ca.cert} to every node and connector; "
              f"keep {ca.key} offline.")
    elif args.kind == "node":
        issued = pki.issue_node(args.dir, args.index, tuple(args.host), days=args.days,
                                force=args.force)
        print(f"node-{args.index}: {issued.describe()}")
    else:
        issued = pki.issue_connector(args.dir, args.site, days=args.days, force=args.force)
        print(f"connector of site {args.site}: {issued.describe()}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from dic_connector.trust import signing

    if args.action == "new":
        key = signing.write_private_key(args.out)
        print(f"signing key written to {args.out} (mode 0600); keep it private.")
    else:
        key = signing.load_private_key(args.key)
    raw = base64.b64encode(signing.public_key_bytes(key)).decode()
    print(f"public key (for `dic admin add-principal --signing-key`): {raw}\n"
          f"{signing.public_key_pem(key)}", end="")
    return 0


def _connector(args: argparse.Namespace) -> int:
    from dic_connector.connector import commands
    from dic_connector.connector.config import load_connector_config

    if args.action == "token":
        token, digest = commands.new_token()
        print(f"operator token (shown once): {token}\noperator_token_sha256: {digest}")
        return 0
    config = load_connector_config(args.config)
    if args.action == "migrate":
        print(f"connector {config.site}: state schema at "
              f"{asyncio.run(commands.migrate(config))}")
        return 0
    if args.action == "serve":
        asyncio.run(commands.serve(config, auto_migrate=not args.no_migrate))
        return 0
    return asyncio.run(commands.pull(config, args.dataset, now=args.now,
                                     auto_migrate=not args.no_migrate))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except DicError as exc:
        print(f"dic: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
