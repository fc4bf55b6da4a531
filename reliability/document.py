"""docs/reliability.md: the soak's part is rewritten by every run, the fuzzing part is kept."""

from __future__ import annotations

import datetime
from pathlib import Path

from reliability.expect import ERROR_MEMORY
from reliability.report import FUZZ_PLACEHOLDER, MARKER, Run, machine, table, verdict_lines
from reliability.scenario import Scenario

INTRO = """\
# Reliability

How the extension server holds up over a long run while its secret stores misbehave,
and against hostile input. The rule under test is the one in
[security.md](security.md#in-short): a failure removes users and never adds one.
`make soak` (`python -m reliability.soak`) runs the soak and rewrites this page down to
the marker below; the section after the marker is written separately.
"""

ABOUT = """\
## Soak

The real server runs as its own process (`extension-server serve`), called over real
gRPC on loopback by 8 caller threads of the soak, each with its own channel, back to
back for the whole run. The server reads Vault through hvac (token auth) from the Vault
stand-in (`tests/support/vault.py`, Vault's documented HTTP API) and AWS Secrets
Manager through boto3 from moto in HTTP server mode, behind a small fault-injecting
proxy (`reliability/faults.py`) that can delay, answer AWS errors or refuse
connections. Nothing is mocked inside the server. The cache TTL is a few seconds, so
the stores are really asked throughout, and every phase below puts one fault on one
store.

### What counts as a wrong answer

Every answer is read as Envoy would read it: our basic_auth filter in every HTTP
connection manager of the returned listener (a listener with a policy attached must
never come back without it), its htpasswd parsed with Envoy's rules
(`compiler.htpasswd.parse_like_envoy`), and compared with the users each attached
policy should contribute, with the `{{SHA}}` hash each must carry:

- a user that no policy attached to that filter chain defines, or a known user with
  another hash, is wrong at any time (that would let someone in);
- plaintext users are always present; a deliberately broken policy never adds a user
  (malformed, outside its namespace's prefix, a secret that does not exist, one the
  token may not read, a missing key, a bcrypt value, a user name conflict, another
  namespace's policy on this Gateway's named chains);
- a store policy's users come all together or not at all, and:
  - while the store is healthy (or slow but within `--backend-timeout`), they must
    be present;
  - while it fails (down, sealed, 429, 5xx, throttling, slower than the timeout),
    they must be present until max-stale after the fault began (the last good value,
    fetched at most one TTL before, is served stale), may be absent from then on, and
    must be absent from TTL + max-stale (+ one backend timeout) after it began, until
    the store is back;
  - for a secret revoked mid-run (deleted in Vault or AWS: a definite answer) they may
    be present for one more TTL (the fresh value), then must be absent: no stale value
    covers a revocation;
  - after a store or secret is back, they may stay absent for min({memory:g} s, TTL)
    (a failure is remembered that long) plus one backend timeout, then must be present
    again.

Every bound is widened by a margin (below) in the direction that never blames the
server for the soak's own timing; during the warm-up only intruders count.
"""


def page(run: Run, scenario: Scenario, path: Path) -> str:
    """The whole page: this run's soak part, then what `path` holds from the marker on."""
    kept = FUZZ_PLACEHOLDER
    if path.exists():
        text = path.read_text()
        if MARKER in text:
            kept = text[text.index(MARKER) :]
    return render(run, scenario) + "\n" + kept


def render(run: Run, scenario: Scenario) -> str:
    s = run.settings
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    kind = "`--quick`: short TTLs, for development" if run.quick else "the full run"
    lines = [
        INTRO,
        ABOUT.format(memory=ERROR_MEMORY),
        "### Machine, commands, settings",
        "",
        f"- Machine: {machine()}. The soak (callers, stand-ins, proxy) and the server "
        "share these CPUs.",
        f"- Soak: `{run.command}` ({kind}: {run.minutes:g} min of phases after the "
        "warm-up; `make soak` runs the full one).",
        f"- Server: `{run.server_command}`",
        "  (`--log-level error`: the broken policies would log a `policy.rejected` warning "
        "on every call; AWS credentials are dummy values in the environment).",
        f"- Cache TTL {s.ttl:g} s, max-stale {s.max_stale:g} s, backend timeout "
        f"{s.timeout:g} s (the server's flags above); the soak's timing margin {s.margin:g} s.",
        f"- Listeners: {run.corpus}.",
        f"- Policies: {_policies(scenario)}.",
        "",
        "### Phases",
        "",
        "| phase | seconds | fault | the semantics allow |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p.name} | {p.seconds:.0f} | {p.fault} | {p.allows} |" for p in run.phases]
    lines += [
        "",
        f"### Results ({when})",
        "",
        "`store policies admitted`: of the store policies in the answers (good ones only), "
        "the share whose users were there; `Vault req.`/`AWS req.`: requests that reached "
        "the stand-in or the proxy (the stores were really asked); p50/p99: latency of a "
        "call as the caller saw it.",
        "",
        table(run),
        "",
        *verdict_lines(run),
        "",
        "Reading the memory figure: `RSS at end` is measured after each phase, so the "
        "column shows which faults the growth comes with. Whether it is a leak or a "
        "working set that each kind of fault builds once is told by running the schedule "
        "more than once (`--rounds 3`): a leak keeps growing in every round.",
        "",
    ]
    return "\n".join(lines)


def _policies(scenario: Scenario) -> str:
    plain = [p for p in scenario.policies if p.store is None and not p.broken]
    stored = [p for p in scenario.policies if p.store is not None and not p.broken]
    broken = [p for p in scenario.policies if p.broken]
    users = sum(len(p.users) for p in stored)
    return (
        f"{len(plain)} plaintext (one on the `https-foo` section only, one from another "
        f"namespace), {len(stored)} from stores ({', '.join(p.name for p in stored)}; "
        f"{users} users in all, among them `{{SHA}}` values and 2 bad entries in "
        f"aws-users), {len(broken)} broken ({', '.join(p.name for p in broken)}), all "
        f"targeting Gateway `{scenario.namespace}/{scenario.gateway}`; the callers cycle "
        "through six requests: every policy on each listener, and plaintext plus one "
        "store's policies"
    )
