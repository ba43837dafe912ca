// hosts50: one `pulumi up` over many hosts. HOSTS sshd listeners, each with a host key of its
// own (separate SSH targets; all in front of this machine's libvirtd), each with
// DOMAINS_PER_HOST shut-off domains of its own, one snapshot create per domain, 10 in flight.
// Each round, side by side: the same creates with local virsh at the same parallelism, the
// provider over all the endpoints (a fresh server), and the provider over one endpoint only
// (a fresh server: the reference for memory per endpoint).
import { makeDomain, type TestDomain } from "../../test/support/lab";
import { timedLocalFanout, virshLocalOk, type SnapshotJob } from "../baselines";
import { DOMAINS_PER_HOST, HOSTS, HOSTS_ROUNDS, PARALLEL } from "../config";
import { snapshotNames } from "../domains";
import { log, onCleanup } from "../lifecycle";
import { PeakRssSampler, median, ms, now, pool, r1, r2 } from "../measure";
import { ProviderServer } from "../provider-server";
import { results, row } from "../report";
import { SshdLog, startSshd, type BenchSshd } from "../sshd";
import { spread } from "./per-op";

interface ProviderRun {
    checkWall: number;
    createWall: number;
    startKb: number;
    peakKb: number;
    /** Handshakes each endpoint saw over the run. */
    handshakes: number[];
    /** Remote commands (exec channels: virsh processes and virsh shells) started during the checks and during the creates, all endpoints. */
    checkCommands: number;
    createCommands: number;
}

interface Round {
    local: number;
    many: ProviderRun;
    one: ProviderRun;
}

async function startEndpoint(): Promise<BenchSshd> {
    // freePort() then bind: two listeners started together can race for a port; try again.
    for (let attempt = 0; ; attempt++) {
        try {
            return await startSshd({ ownHostKey: true });
        } catch (e) {
            if (attempt >= 2) throw e;
        }
    }
}

/** Checks (timed apart) then creates of every job, 10 in flight, on a fresh server; each job through its endpoint. */
async function providerRun(
    label: string,
    jobs: readonly SnapshotJob[],
    endpointOf: (j: SnapshotJob) => BenchSshd,
    endpoints: readonly BenchSshd[],
): Promise<ProviderRun> {
    const logs = endpoints.map((e) => new SshdLog(e.log));
    const marks = logs.map((l) => l.mark());
    const p = await ProviderServer.start(endpoints[0]!, label);
    onCleanup(() => p.close());
    try {
        const startKb = p.status().rssKb;
        const rss = new PeakRssSampler(p.pid, startKb);
        const connection = (e: BenchSshd) => ({ ...p.connection, host: e.host, port: e.port, hostKey: e.hostKey });
        const t0 = now();
        const checked = await pool(PARALLEL, jobs, (j) => p.check(j.dom.name, j.name, connection(endpointOf(j))));
        const t1 = now();
        const between = logs.map((l) => l.mark());
        await pool(PARALLEL, checked, (c) => p.create(c.urn, c.inputs));
        const t2 = now();
        const peakKb = rss.stop();
        const commands = (from: number[]) => logs.reduce((n, l, k) => n + l.since(from[k]!).commands, 0);
        const all = commands(marks),
            creates = commands(between);
        return {
            checkWall: t1 - t0,
            createWall: t2 - t1,
            startKb,
            peakKb,
            handshakes: logs.map((l, k) => l.since(marks[k]!).handshakes),
            checkCommands: all - creates,
            createCommands: creates,
        };
    } finally {
        await p.close();
    }
}

async function deleteLocally(jobs: readonly SnapshotJob[], doms: readonly TestDomain[]): Promise<void> {
    await pool(PARALLEL, jobs, (j) => virshLocalOk(["snapshot-delete", "--domain", j.dom.uuid, "--snapshotname", j.name]));
    for (const d of doms) {
        const left = await snapshotNames(d);
        if (left.length) throw new Error(`hosts50: ${d.name} still has ${left.length} snapshots`);
    }
}

export async function hosts50(): Promise<void> {
    const n = HOSTS * DOMAINS_PER_HOST;
    log(`hosts50: ${HOSTS} SSH endpoints with their own host keys, ${n} shut-off domains, ${PARALLEL} creates in flight`);
    const endpoints = await pool(5, Array.from({ length: HOSTS }), async () => {
        const e = await startEndpoint();
        onCleanup(() => e.stop());
        return e;
    });
    if (new Set(endpoints.map((e) => e.hostKey)).size !== HOSTS) throw new Error("hosts50: the endpoints' host keys are not all different");
    const doms = await pool(5, Array.from({ length: n }), async () => {
        const d = await makeDomain({ prefix: "bench-h50-", running: false });
        onCleanup(() => d.dispose());
        return d;
    });
    // Domain i belongs to endpoint i % HOSTS, and the jobs go in domain order, as a program
    // declaring one snapshot per VM over a fleet would: the first HOSTS go to HOSTS different hosts.
    const endpointOfDomain = new Map(doms.map((d, i) => [d.uuid, endpoints[i % HOSTS]!]));
    const jobsOf = (k: number): SnapshotJob[] => doms.map((dom) => ({ dom, name: `h50-${k}` }));
    // Warm-up: the first snapshot of a fresh qcow2 grows the file.
    const warm = jobsOf(-1);
    await timedLocalFanout(warm);
    await deleteLocally(warm, doms);

    const rounds: Round[] = [];
    for (let round = 0; round < HOSTS_ROUNDS; round++) {
        const jobs = jobsOf(round);
        const local = await timedLocalFanout(jobs);
        await deleteLocally(jobs, doms);
        const many = await providerRun(`hosts${HOSTS}-${round}`, jobs, (j) => endpointOfDomain.get(j.dom.uuid)!, endpoints);
        await deleteLocally(jobs, doms);
        const one = await providerRun(`hosts1-${round}`, jobs, () => endpoints[0]!, [endpoints[0]!]);
        await deleteLocally(jobs, doms);
        rounds.push({ local, many, one });
        log(
            `  round ${round + 1}: local || ${ms(local)}, provider over ${HOSTS} endpoints ${ms(many.createWall)}, over 1 ${ms(one.createWall)}`,
        );
    }
    const medOf = (f: (r: Round) => number) => median(rounds.map(f));
    const ratio = spread(rounds.map((r) => r.many.createWall / r.local));
    const oneRatio = spread(rounds.map((r) => r.one.createWall / r.local));
    const handshakes = rounds.flatMap((r) => r.many.handshakes);
    const handshakesMax = Math.max(...handshakes),
        handshakesMin = Math.min(...handshakes);
    // Memory per endpoint: the many-endpoint server's peak over the one-endpoint server's, same RPCs, same round.
    const growthKb = spread(rounds.map((r) => (r.many.peakKb - r.one.peakKb) / (HOSTS - 1)));
    const f2 = (x: number) => r2(x).toFixed(2);
    row(`hosts${HOSTS} (${n} creates, shut-off domains, 10 in flight; ${rounds.length} rounds)`, "local ||", `${HOSTS} hosts`, "1 host");
    row("  wall time of the creates", ms(medOf((r) => r.local)), ms(medOf((r) => r.many.createWall)), ms(medOf((r) => r.one.createWall)));
    row("  checks before the creates (wall)", "", ms(medOf((r) => r.many.checkWall)), ms(medOf((r) => r.one.checkWall)));
    row("  provider / local || (median; min, max)", "", `${f2(ratio.med)} (${f2(ratio.min)}, ${f2(ratio.max)})`, f2(oneRatio.med));
    row("  handshakes per endpoint (min / max)", "", `${handshakesMin} / ${handshakesMax}`, "");
    row(
        "  exec channels on the hosts: checks / creates",
        "",
        `${medOf((r) => r.many.checkCommands)} / ${medOf((r) => r.many.createCommands)}`,
        `${medOf((r) => r.one.checkCommands)} / ${medOf((r) => r.one.createCommands)}`,
    );
    row(
        "  provider RSS: start / peak (median)",
        "",
        `${r1(medOf((r) => r.many.startKb) / 1024)} / ${r1(medOf((r) => r.many.peakKb) / 1024)} MB`,
        `${r1(medOf((r) => r.one.startKb) / 1024)} / ${r1(medOf((r) => r.one.peakKb) / 1024)} MB`,
    );
    row(
        "  peak RSS growth per endpoint (min, max)",
        "",
        `${r2(growthKb.med / 1024)} MB (${r2(growthKb.min / 1024)}, ${r2(growthKb.max / 1024)})`,
        "",
    );
    Object.assign(results, {
        hosts50: r2(ratio.med),
        hosts50Min: r2(ratio.min),
        hosts50Max: r2(ratio.max),
        hosts50Endpoints: HOSTS,
        hosts50LocalMs: r1(medOf((r) => r.local)),
        hosts50ProviderMs: r1(medOf((r) => r.many.createWall)),
        hosts50CheckMs: r1(medOf((r) => r.many.checkWall)),
        hosts50OneEndpointRatio: r2(oneRatio.med),
        hosts50HandshakesPerEndpoint: handshakesMax,
        hosts50ExecChannels: { checks: medOf((r) => r.many.checkCommands), creates: medOf((r) => r.many.createCommands) },
        hosts50OneEndpointExecChannels: { checks: medOf((r) => r.one.checkCommands), creates: medOf((r) => r.one.createCommands) },
        hosts50HandshakesPerEndpointMin: handshakesMin,
        hosts50RssGrowthPerEndpointMB: r2(growthKb.med / 1024),
        hosts50RssGrowthPerEndpointMBMin: r2(growthKb.min / 1024),
        hosts50RssGrowthPerEndpointMBMax: r2(growthKb.max / 1024),
        hosts50PeakRssMB: r1(medOf((r) => r.many.peakKb) / 1024),
        hosts50OneEndpointPeakRssMB: r1(medOf((r) => r.one.peakKb) / 1024),
    });
}
