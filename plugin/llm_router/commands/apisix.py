"""`llm-router apisix {enable,disable,upstreams,config}`: put llm-router on an existing APISIX route."""
from __future__ import annotations

import json
import os
import sys

import orjson
import yaml

from llm_router.commands.common import add_config_arg, load_or_exit
from llm_router.config import Config, ConfigError, parse_policy
from llm_router.plan import ROUTE_HEADER

DEFAULT_ADMIN = "http://127.0.0.1:9180"


def register(sub) -> None:
    p = sub.add_parser("apisix", help="enable llm-router on an APISIX route; provider upstreams; config fragment")
    asub = p.add_subparsers(dest="apisix_command", required=True, metavar="ACTION")

    def admin_args(q) -> None:
        q.add_argument("--admin", default=os.environ.get("APISIX_ADMIN_URL", DEFAULT_ADMIN),
                       help="Admin API base URL (default: $APISIX_ADMIN_URL or %(default)s)")
        q.add_argument("--key", default=os.environ.get("APISIX_ADMIN_KEY"), help="Admin API key (default: $APISIX_ADMIN_KEY)")
        q.add_argument("--upstream-prefix", default="llm-", help="prefix of the provider upstream ids (default %(default)s)")
        add_config_arg(q)

    q = asub.add_parser("enable", help="add ext-plugin-pre-req + traffic-split to an EXISTING route (other plugins kept)")
    q.add_argument("route_id")
    which = q.add_mutually_exclusive_group()
    which.add_argument("--policy", help="policy name from the config (default: the default policy)")
    which.add_argument("--conf", metavar="JSON", help="inline runner conf, e.g. '{\"extends\": \"default\", \"explain\": true}'")
    q.add_argument("--post-resp", action="store_true", help="also add ext-plugin-post-resp (usage accounting)")
    q.add_argument("--stream-usage", metavar="URL",
                   help="also add http-logger posting streamed answers (their usage) to the runner's listener, e.g. "
                        "http://127.0.0.1:9464/v1/usage-log (needs --post-resp and server.apisix_stream_usage: true; "
                        "$LLM_ROUTER_USAGE_LOG_KEY, set for the runner too, becomes its Authorization)")
    q.add_argument("--allow-degradation", action="store_true",
                   help="let requests through when the runner is down (fails OPEN: the client's own headers reach "
                        "traffic-split); also set when the policy's failure_mode is open")
    q.add_argument("--dry-run", action="store_true", help="print the new route instead of saving it")
    admin_args(q)
    q.set_defaults(func=run_enable)

    q = asub.add_parser("disable", help="remove llm-router's plugins and split rules from a route")
    q.add_argument("route_id")
    q.add_argument("--dry-run", action="store_true", help="print the new route instead of saving it")
    admin_args(q)
    q.set_defaults(func=run_disable)

    q = asub.add_parser("upstreams", help="print (or --apply) one APISIX upstream per provider of the catalog")
    q.add_argument("--apply", action="store_true", help="create/replace them through the Admin API")
    admin_args(q)
    q.set_defaults(func=run_upstreams)

    q = asub.add_parser("config", help="print the APISIX config.yaml fragment that starts the runner")
    q.add_argument("--dev", metavar="SOCKET", help="development mode: path_for_test SOCKET instead of cmd")
    q.add_argument("--runner-config", default="/etc/llm-router/config.yaml", help="config path in the cmd line")
    q.add_argument("--runner-log", default="/var/log/llm-router/runner.log", help="runner log file in the cmd line")
    add_config_arg(q)
    q.set_defaults(func=run_config)


def _fail(msg: str, code: int = 1) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def route_header(cfg: Config) -> str:
    return str(cfg.server.get("route_header", ROUTE_HEADER))


def conf_value(args, cfg: Config) -> str:
    """The runner conf JSON string for the route; validated with the core schema (SystemExit 2 if bad)."""
    if args.conf is not None:
        value = args.conf
    else:
        value = orjson.dumps({"policy": args.policy or cfg.default_policy}).decode()
    try:
        parse_policy(value, cfg, source="--conf" if args.conf is not None else "--policy")
    except ConfigError as exc:
        print(f"error: invalid runner conf ({exc.source}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    return value


def run_enable(args) -> int:
    from llm_router.gateways.apisix import routes
    from llm_router.gateways.apisix.usage_log import KEY_ENV, key_from_env
    from llm_router.gateways.apisix.admin import Admin, AdminError
    from llm_router.router import build_catalog

    cfg = load_or_exit(args.config)
    value = conf_value(args, cfg)
    # the policy's failure_mode "open" means the same as allow_degradation (Envoy: failure_mode_allow)
    fail_open = args.allow_degradation or parse_policy(value, cfg)[1].failure_mode == "open"
    opts = routes.EnableOptions(conf_value=value, route_header=route_header(cfg), prefix=args.upstream_prefix,
                                post_resp=args.post_resp, allow_degradation=fail_open,
                                stream_usage=getattr(args, "stream_usage", None), stream_usage_key=key_from_env())
    try:
        with Admin(args.admin, args.key) as admin:
            stored = admin.get("routes", args.route_id)
            if stored is None:
                return _fail(f"route {args.route_id!r} does not exist; enable works on an existing route (create it first)")
            try:
                new = routes.enable(stored.value, build_catalog(cfg), opts)
            except routes.RouteRefused as exc:
                return _fail(f"refusing to enable llm-router on route {args.route_id!r}: {exc}")
            problems = routes.validate_plugin_conf(new)
            missing = [u for u in routes.upstream_ids(new) if admin.get("upstreams", u) is None]
            if missing:
                problems.append(f"upstreams {missing} do not exist; create them with `llm-router apisix upstreams --apply`")
            if problems:
                return _fail("the new route would not work: " + "; ".join(problems))
            if args.dry_run:
                print(json.dumps(new, indent=2))
                return 0
            if not _put_unchanged(admin, args.route_id, stored, new):
                return _fail(f"route {args.route_id!r} changed while it was being edited; nothing saved, run enable again")
    except AdminError as exc:
        return _fail(str(exc))
    kept = sorted(set(new.get("plugins", {})) - {routes.PRE_REQ, routes.POST_RESP, routes.SPLIT}
                  - ({routes.LOGGER} if opts.stream_usage else set()))
    print(f"llm-router enabled on route {args.route_id}: {routes.PRE_REQ} (allow_degradation "
          f"{str(opts.allow_degradation).lower()}){' + ' + routes.POST_RESP if opts.post_resp else ''}"
          f"{' + ' + routes.LOGGER + ' (streams usage)' if opts.stream_usage else ''}, "
          f"{routes.SPLIT} on {routes.header_var(opts.route_header)} -> {', '.join(routes.upstream_ids(new))}; "
          f"other plugins kept: {', '.join(kept) or 'none'}")
    if opts.stream_usage and not opts.stream_usage_key:
        print(f"warning: ${KEY_ENV} is not set: the runner's /v1/usage-log takes posts from anyone who reaches it (a "
              f"client could post usage for its own streams); set it here and in the runner's environment, and enable "
              f"again", file=sys.stderr)
    if opts.allow_degradation:
        print("warning: allow_degradation fails OPEN: with the runner down, the client's routing header and key "
              "reach traffic-split and the provider", file=sys.stderr)
    return 0


def _put_unchanged(admin, route_id: str, stored, new: dict) -> bool:
    """PUT the edited route only if nobody changed it since it was read (etcd modifiedIndex); False if someone did."""
    again = admin.get("routes", route_id)
    if again is None or again.modified_index != stored.modified_index:
        return False
    admin.put("routes", route_id, new)
    return True


def run_disable(args) -> int:
    from llm_router.gateways.apisix import routes
    from llm_router.gateways.apisix.admin import Admin, AdminError

    cfg = load_or_exit(args.config)
    try:
        with Admin(args.admin, args.key) as admin:
            stored = admin.get("routes", args.route_id)
            if stored is None:
                return _fail(f"route {args.route_id!r} does not exist")
            new = routes.disable(stored.value, route_header(cfg))
            if new == stored.value:
                print(f"llm-router is not enabled on route {args.route_id}; nothing to do")
                return 0
            if args.dry_run:
                print(json.dumps(new, indent=2))
                return 0
            if not _put_unchanged(admin, args.route_id, stored, new):
                return _fail(f"route {args.route_id!r} changed while it was being edited; nothing saved, run disable again")
    except AdminError as exc:
        return _fail(str(exc))
    print(f"llm-router disabled on route {args.route_id}; other plugins and the upstream kept")
    return 0


def run_upstreams(args) -> int:
    from llm_router.gateways.apisix import routes
    from llm_router.gateways.apisix.admin import Admin, AdminError
    from llm_router.router import build_catalog

    cfg = load_or_exit(args.config)
    ups = routes.provider_upstreams(build_catalog(cfg), args.upstream_prefix)
    if not args.apply:
        print(json.dumps(ups, indent=2))
        return 0
    try:
        with Admin(args.admin, args.key) as admin:
            for uid, up in ups.items():
                admin.put("upstreams", uid, up)
                print(f"upstream {uid}: {up['scheme']}://{up['nodes'][0]['host']}:{up['nodes'][0]['port']}")
    except AdminError as exc:
        return _fail(str(exc))
    return 0


AWS_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def secret_env_names(cfg: Config) -> list[str]:
    """Environment variables the runner reads secrets from (nginx_config.envs must pass them on)."""
    from llm_router.gateways.apisix.usage_log import KEY_ENV

    names = {"LLM_ROUTER_LOG_LEVEL"}
    if cfg.server.get("apisix_stream_usage"):
        names.add(KEY_ENV)
    refs: list[str] = [ref for prov in cfg.providers.values() for ref in prov.credentials]

    def walk(value) -> None:  # the secret stores' own credentials (Vault token, AppRole ids...)
        if isinstance(value, str):
            refs.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(cfg.secrets)
    for ref in refs:
        if ref.startswith("env://"):
            names.add(ref[len("env://"):].split("#", 1)[0])
        elif ref.startswith("aws://"):
            names.update(AWS_ENV)
    return sorted(names)


def config_fragment(cfg: Config, *, dev_socket: str | None = None, runner_config: str = "/etc/llm-router/config.yaml",
                    runner_log: str = "/var/log/llm-router/runner.log") -> str:
    """The config.yaml fragment: how APISIX starts (or finds) the runner, and the env it passes on."""
    if dev_socket:
        ext = {"path_for_test": dev_socket}
        head = ("# Development: start the runner yourself, then APISIX connects to it:\n"
                f"#   llm-router serve --apisix --socket {dev_socket}\n")
    else:
        ext = {"cmd": ["llm-router", "serve", "--apisix", "--config", runner_config, "--log-file", runner_log]}
        head = ("# APISIX starts the runner (APISIX_LISTEN_ADDRESS and APISIX_CONF_EXPIRE_TIME set by APISIX),\n"
                "# restarts it 3 s after it dies, and stops it with SIGTERM on reload/stop.\n")
    data = {"ext-plugin": ext, "nginx_config": {"envs": secret_env_names(cfg)}}
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    note = ("# Merge into APISIX's conf/config.yaml (APISIX >= 3.6: the runner rewrites the request body).\n"
            "# The plugins ext-plugin-pre-req, ext-plugin-post-resp and traffic-split are enabled by default;\n"
            "# if your config.yaml lists `plugins:` explicitly, keep them in that list.\n"
            "# nginx_config.envs: only variables listed here reach the runner (provider keys).\n")
    return note + head + text


def run_config(args) -> int:
    cfg = load_or_exit(args.config)
    sys.stdout.write(config_fragment(cfg, dev_socket=args.dev, runner_config=args.runner_config,
                                     runner_log=args.runner_log))
    return 0
