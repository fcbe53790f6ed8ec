"""The gossip layer simulated: N nodes, WAN latency, loss and churn, in one process.

What runs is the real core (``p2p_offers.gossip``: mesh, seen-cache, router,
digests, wire), with every message encoded and parsed and every record an
Ed25519-signed BEP44 record that each node verifies. Only the network and the
clock are simulated (``p2p_offers.gossip.sim``). Per network size:

1. 10 s of warm-up: the meshes form from DHT lookups.
2. A window of ``--window-s``: ``--versions`` versions published at random
   times by random live nodes (30 % of them the next seq of one of the
   owner's records). Meanwhile ``--churn`` of the nodes die at random times
   and come back 5 to 15 s later with an empty book (own records kept).
3. Each restarted node is checked until it holds everything published before
   it came back: ``restart_rounds_to_repair`` counts anti-entropy rounds
   (0: the exchange it starts as it comes up, checked 1 s later, was enough;
   k: k rounds of ``anti_entropy_s`` after that).
4. From the end of the window (every node is back by then), rounds run until
   every live node holds the newest version of every record
   (``rounds_to_repair_after_window``, 0: nothing was missing), then two more,
   so the anti-entropy traffic includes what quiet rounds cost.

Reported: final ``delivered_pct`` (every (live node, version) pair, counting a
newer seq as delivered), the share delivered by gossip alone (among nodes
alive when the version was published), hops and latency of the gossip
receipts, messages and bytes per version (sent by the owner, and in total,
also as a multiple of N), and the anti-entropy traffic per node and round.

Targets (issue 8): 100 % delivered; hops p99 <= 6 at 1,000 nodes; the owner
sends <= 8 messages per version; total <= 8 x N messages per version.

    .venv/bin/python bench/bench_gossip_sim.py                 # 10, 30, 50, 1000 nodes
    .venv/bin/python bench/bench_gossip_sim.py --nodes 1000 --seed 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from _common import emit, log, percentile

from p2p_offers.gossip.sim import NetParams, SimParams, Simulation

WARMUP_S = 10.0
MAX_ROUNDS = 30


def scenario(n: int, args: argparse.Namespace) -> dict[str, Any]:
    cpu0 = time.process_time()
    net = NetParams(rtt_ms=args.rtt_ms, jitter_ms=args.jitter_ms, loss=args.loss_pct / 100)
    sim = Simulation(SimParams(n=n, seed=args.seed, net=net))
    rng = random.Random(args.seed)
    start, end = WARMUP_S, WARMUP_S + args.window_s
    churned = rng.sample(range(n), round(args.churn * n))
    repaired_after: list[int | None] = []  # per restart: anti-entropy rounds until whole

    def restart(i: int) -> None:
        sim.restart(i)
        wanted = dict(sim.truth)  # everything published before it came back
        sim.at(sim.t + 1.0, check, i, wanted, 0)  # round 0: the exchange it starts as it comes up

    def check(i: int, wanted: dict[tuple[str, str], int], rounds: int) -> None:
        store = sim.nodes[i].store
        if all((h := store.get(k)) is not None and h.seq >= s for k, s in wanted.items()):
            repaired_after.append(rounds)
        elif rounds >= MAX_ROUNDS or not sim.nodes[i].alive:
            repaired_after.append(None)
        else:
            sim.at(sim.t + sim.params.anti_entropy_s, check, i, wanted, rounds + 1)

    for i in churned:
        down = rng.uniform(start, end - 15)
        sim.at(down, sim.kill, i)
        sim.at(down + rng.uniform(5, 15), restart, i)

    def publish() -> None:
        live = [node.index for node in sim.nodes if node.alive]
        owner = rng.choice(live)
        mine = sorted({p.key for p in sim.published if p.owner == owner})
        sim.publish(owner, rng.choice(mine) if mine and rng.random() < 0.3 else None)

    for t in sorted(rng.uniform(start, end) for _ in range(args.versions)):
        sim.at(t, publish)
    sim.run_until(end + 1.0)  # the last version's gossip has settled (hops x ~45 ms)
    by_gossip = _gossip_figures(sim)

    # Repair: anti-entropy rounds from the end of the window until nothing is missing.
    missing_at_end = sim.missing()
    ae_sent0 = _ae_messages(sim)
    rounds = 0
    while sim.missing() and rounds < MAX_ROUNDS:
        sim.run_until(sim.t + sim.params.anti_entropy_s)
        rounds += 1
    sim.run_until(sim.t + 2 * sim.params.anti_entropy_s)  # and what a quiet round costs
    ae_msgs, ae_bytes = (x - y for x, y in zip(_ae_messages(sim), ae_sent0, strict=True))
    node_rounds = n * (rounds + 2)

    owner_msgs = [sim.owner_msgs[p.id] for p in sim.published]
    total_msgs = [sim.version_msgs[p.id] for p in sim.published]
    version_bytes = sim.bytes["version"] / max(1, sim.sent["version"])
    result = {
        "nodes": n,
        "versions": len(sim.published),
        "churned_nodes": len(churned),
        "delivered_pct": round(sim.delivery(), 3),
        **by_gossip,
        "owner_msgs_per_version_p50": statistics.median(owner_msgs),
        "owner_msgs_per_version_max": max(owner_msgs),
        "total_msgs_per_version_p50": statistics.median(total_msgs),
        "total_msgs_per_version_max": max(total_msgs),
        "total_msgs_per_version_over_n_max": round(max(total_msgs) / n, 2),
        "owner_bytes_per_version_p50": round(statistics.median(owner_msgs) * version_bytes),
        "total_bytes_per_version_p50": round(statistics.median(total_msgs) * version_bytes),
        "restarted_repaired_pct": round(
            100 * sum(r is not None for r in repaired_after) / max(1, len(repaired_after)), 1
        ),
        "restart_rounds_to_repair_p50": _median(repaired_after),
        "restart_rounds_to_repair_max": max(
            (r for r in repaired_after if r is not None), default=None
        ),
        "missing_at_window_end": missing_at_end,
        "rounds_to_repair_after_window": rounds if not sim.missing() else None,
        "anti_entropy_interval_s": sim.params.anti_entropy_s,
        "anti_entropy_msgs_per_node_round": round(ae_msgs / node_rounds, 2),
        "anti_entropy_bytes_per_node_round": round(ae_bytes / node_rounds),
        "mesh_size_mean": round(statistics.mean(len(x.router.mesh) for x in sim.nodes), 2),
        "failed_sends": sim.failed_sends,
        "cpu_s": round(time.process_time() - cpu0, 1),
    }
    result["targets_met"] = {
        "delivered_100pct": result["delivered_pct"] == 100.0
        and result["restarted_repaired_pct"] == 100.0,
        "owner_le_8": result["owner_msgs_per_version_max"] <= 8,
        "total_le_8n": result["total_msgs_per_version_over_n_max"] <= 8,
        "hops_p99_le_6": (result["hops_p99"] or 0) <= 6,
    }
    return result


def _gossip_figures(sim: Simulation) -> dict[str, Any]:
    hops: list[float] = []
    latency_ms: list[float] = []
    reached = expected = 0
    for p, receipts in sim.gossip_receipts():
        hops.extend(r.hops for r in receipts if r.hops is not None)
        latency_ms.extend((r.at - p.at) * 1000 for r in receipts)
        expected += len(p.alive)
        for i in p.alive:
            r = sim.nodes[i].receipts.get(p.id)
            reached += r is not None and r.hops is not None
    return {
        "delivered_by_gossip_pct": round(100 * reached / max(1, expected), 3),
        "hops_p50": percentile(hops, 50),
        "hops_p99": percentile(hops, 99),
        "hops_max": max(hops) if hops else None,
        "gossip_latency_ms_p50": round(percentile(latency_ms, 50), 1),
        "gossip_latency_ms_p99": round(percentile(latency_ms, 99), 1),
    }


def _median(values: list[int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _ae_messages(sim: Simulation) -> tuple[int, int]:
    kinds = ("digest", "entries", "want", "versions")
    return sum(sim.sent[k] for k in kinds), sum(sim.bytes[k] for k in kinds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="10,30,50,1000", help="comma-separated sizes")
    parser.add_argument("--rtt-ms", type=float, default=80.0)
    parser.add_argument("--jitter-ms", type=float, default=10.0)
    parser.add_argument("--loss-pct", type=float, default=1.0)
    parser.add_argument("--churn", type=float, default=0.10, help="share of nodes that restart")
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    runs = []
    for n in (int(x) for x in args.nodes.split(",")):
        log(f"simulating {n} nodes ...")
        runs.append(scenario(n, args))
        log(f"  {runs[-1]}")
    emit(
        {
            "bench": "gossip_sim",
            "rtt_ms": args.rtt_ms,
            "jitter_ms": args.jitter_ms,
            "loss_pct": args.loss_pct,
            "churn": args.churn,
            "seed": args.seed,
            "runs": runs,
        }
    )


if __name__ == "__main__":
    main()
