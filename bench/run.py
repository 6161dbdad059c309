"""Run the benchmarks and print a table: `.venv/bin/python -m bench.run [names...]`.

Writes the figures to bench/results/latest.json. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio

from bench import common, eventstore_bench, pipeline_bench


async def main(selected: set[str], repeats: int) -> None:
    results: list[dict[str, object]] = []
    if not selected or "append" in selected:
        url = await common.scratch_database("orch_bench_append")
        results += await eventstore_bench.run_append(url, repeats)
    if not selected or "relay" in selected:
        url = await common.scratch_database("orch_bench_relay")
        results.append(await pipeline_bench.run_relay(url, repeats))
    if not selected or "rebuild" in selected:
        url = await common.scratch_database("orch_bench_rebuild")
        results.append(await pipeline_bench.run_rebuild(url, repeats))
    if not selected or "e2e" in selected:
        url = await common.scratch_database("orch_bench_e2e")
        results.append(await pipeline_bench.run_e2e(url))
    # deployments API and TOSCA validation (issue 3): a real server process, loaded by hey
    if not selected or "api" in selected:
        from bench import api_bench

        url = await common.scratch_database("orch_bench_api")
        results += await api_bench.run_api(url, repeats)
    # provider ranking (issue 4): selection + built-in ranking for one request
    if not selected or "ranking" in selected:
        from bench import ranking_bench

        url = await common.scratch_database("orch_bench_ranking")
        results += await ranking_bench.run_rank(url, repeats)
    # IM deployer (issue 5): 200 concurrent creates through the system against the real IM
    if not selected or "im" in selected:
        from bench import im_bench

        url = await common.scratch_database("orch_bench_im")
        results += await im_bench.run_im(url)
    # statistics and audit (issue 7): scale with ORCH_BENCH_AUDIT_DEPLOYMENTS (docs)
    if not selected or "audit" in selected:
        import os

        from bench import audit_bench

        url = await common.scratch_database("orch_bench_audit")
        results += await audit_bench.run_audit(url, deployments=int(
            os.environ.get("ORCH_BENCH_AUDIT_DEPLOYMENTS", "100000")))
    # provider ingestion and the flavours-for-a-site read (issue 4, A)
    if not selected or "providers" in selected:
        from bench import providers_bench

        url = await common.scratch_database("orch_bench_providers")
        results += await providers_bench.run_providers(url, repeats)
    print(f"machine: {common.machine()}")
    common.print_table(results)
    common.save(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("groups", nargs="*",
                        help="append, relay, rebuild, e2e, api, ranking, im, audit, providers "
                             "(default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(set(args.groups), args.repeats))
