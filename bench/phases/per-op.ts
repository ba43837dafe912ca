// Per operation: create → read → delete on one warm provider process, against local
// virsh (A), a fresh ssh per command (B) and the same commands in one warm local virsh
// shell (C, the floor), interleaved in rotating order within each
// iteration so that all of them see the same load. The provider and B also run through the
// lab's delay proxy (a host RTT_MS away), each right next to its run without it, and each
// such pair gives the round trips one create → read → delete waits for.
import { VirshShell, localTrio, sshTrio } from "../baselines";
import { ITER, RTT_MS, WARMUP, lab } from "../config";
import { measureProxyRtt, startDelayProxy } from "../delay";
import { newDomain } from "../domains";
import { log, onCleanup } from "../lifecycle";
import { median, ms, now, r1, r2, type Trio } from "../measure";
import { ProviderServer } from "../provider-server";
import type { Props } from "../../test/harness/engine";
import { results, row } from "../report";
import { clientPorts, viaLoopbackPort, type SshEndpoint, type SshdLog } from "../sshd";

/**
 * What the sshd's log says about one path's own connections: everything, when the sshd is the
 * benchmark's own; on a shared sshd, the events of the client ports that `ports` returns
 * (sampled after each round, so a connection opened and closed within one round is missed).
 */
interface Counter {
    log: SshdLog;
    ports?: () => Promise<number[]>;
    seen: Set<number>;
}

/** One provider create → read → delete, with what the sshd saw of it (its Check included in the counts). */
interface ProviderRound {
    trio: Trio;
    commands: number;
    checkCommands: number;
    handshakes: number;
}

async function providerRound(
    provider: ProviderServer,
    counter: Counter,
    domain: string,
    name: string,
    connection: Props,
): Promise<ProviderRound> {
    const sshdLog = counter.log;
    const m0 = sshdLog.mark();
    const { urn, inputs } = await provider.check(domain, name, connection);
    const m1 = sshdLog.mark();
    const tc0 = now();
    const s = await provider.create(urn, inputs);
    const tc1 = now();
    await provider.read(s);
    const tc2 = now();
    await provider.delete(s);
    const tc3 = now();
    if (counter.ports) for (const p of await counter.ports()) counter.seen.add(p);
    const ports = counter.ports ? counter.seen : undefined;
    const all = sshdLog.since(m0, ports),
        trio = sshdLog.since(m1, ports);
    return {
        trio: { create: tc1 - tc0, read: tc2 - tc1, del: tc3 - tc2, total: tc3 - tc0 },
        commands: trio.commands,
        checkCommands: all.commands - trio.commands,
        handshakes: all.handshakes,
    };
}

/** Median, minimum, maximum and the middle half (25th to 75th percentile, nearest rank) of paired rounds. */
export function spread(xs: number[]): { med: number; min: number; max: number; q1: number; q3: number } {
    const s = [...xs].sort((a, b) => a - b);
    const rank = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
    return { med: median(xs), min: s[0]!, max: s[s.length - 1]!, q1: rank(0.25), q3: rank(0.75) };
}

/**
 * sshd is the host's SSH endpoint and sshdLog its sshd's log; shared: other sessions use
 * that sshd too, so only the provider's own connections are counted (by client port).
 */
export async function perOperation(sshd: SshEndpoint, sshdLog: SshdLog, shared = false): Promise<void> {
    log(
        `per-operation on ${lab.name}: ${WARMUP} warm-up + ${ITER} iterations, interleaved, half of them through a ${RTT_MS} ms delay proxy`,
    );
    const dom = await newDomain("labtmp-bench-op-");
    const proxy = await startDelayProxy(sshd.host, sshd.port, RTT_MS);
    onCleanup(() => proxy.stop());
    const far = viaLoopbackPort(sshd, proxy.port);
    const rttBefore = await measureProxyRtt(RTT_MS);
    const provider = await ProviderServer.start(sshd, "perop");
    onCleanup(() => provider.close());
    // One server, two connections (two pooled SSH connections): the pair runs in the same process.
    const near = provider.connection,
        farConnection = provider.via(proxy.port);
    const counter = (pid: number): Counter => ({
        log: sshdLog,
        ports: shared ? () => clientPorts(pid, sshd.host, sshd.port) : undefined,
        seen: new Set(),
    });
    const shell = await VirshShell.start();
    onCleanup(async () => shell.close());
    const nearCounter = counter(provider.pid),
        farCounter = counter(proxy.pid);
    const L: Trio[] = [],
        W: Trio[] = [],
        S: Trio[] = [],
        SD: Trio[] = [],
        P: ProviderRound[] = [],
        PD: ProviderRound[] = [];
    let handshakesNear = 0,
        handshakesFar = 0;
    // Four groups in rotating order: local virsh, fresh ssh without and with the delay, the
    // provider without and with it, the warm local virsh shell. The two halves of a pair run back to back, in alternating
    // order, so that each pair sees the same load: the ops themselves vary by far more than an RTT.
    for (let i = 0; i < WARMUP + ITER; i++) {
        const keep = i >= WARMUP;
        const halves = i % 2 ? [true, false] : [false, true];
        for (const group of [0, 1, 2, 3].map((k) => (k + i) % 4)) {
            if (group === 0) {
                const t = await localTrio(dom.uuid, `bench-${i}-local`);
                if (keep) L.push(t);
                continue;
            }
            if (group === 3) {
                const t = await shell.trio(dom.uuid, `bench-${i}-shell`);
                if (keep) W.push(t);
                continue;
            }
            for (const delayed of halves) {
                const name = `bench-${i}-${group === 1 ? "ssh" : "provider"}${delayed ? "-far" : ""}`;
                if (group === 1) {
                    const t = await sshTrio(delayed ? far : sshd, dom.uuid, name);
                    if (keep) (delayed ? SD : S).push(t);
                } else {
                    const r = await providerRound(
                        provider,
                        delayed ? farCounter : nearCounter,
                        dom.name,
                        name,
                        delayed ? farConnection : near,
                    );
                    if (delayed) handshakesFar += r.handshakes;
                    else handshakesNear += r.handshakes;
                    if (keep) (delayed ? PD : P).push(r);
                }
            }
        }
    }
    const rttAfter = await measureProxyRtt(RTT_MS);
    // Check is timed on its own (a create's Check happens at preview and again at up).
    const checks: number[] = [];
    for (let i = 0; i < 10; i++) {
        const t0 = now();
        await provider.check(dom.name, `bench-check-${i}`);
        checks.push(now() - t0);
    }
    const med = (xs: Trio[], k: keyof Trio) => median(xs.map((x) => x[k]));
    const trios = (rs: ProviderRound[]) => rs.map((r) => r.trio);
    const local = med(L, "total"),
        ssh = med(S, "total"),
        prov = med(trios(P), "total");
    const cmdsPerTrio = median(P.map((r) => r.commands)),
        cmdsPerTrioFar = median(PD.map((r) => r.commands)),
        checkCmds = median(P.map((r) => r.checkCommands));
    row(`per operation on ${lab.name} (median of ${ITER})`, "virsh shell", "local virsh", "fresh ssh", "provider");
    for (const k of ["create", "read", "del", "total"] as const) {
        row(`  ${k === "del" ? "delete" : k}`, ms(med(W, k)), ms(med(L, k)), ms(med(S, k)), ms(med(trios(P), k)));
    }
    row("  provider check (not in total)", "", "", "", ms(median(checks)));
    row("  virsh processes per create+read+delete", "0", "3", "3", String(cmdsPerTrio));
    row("  virsh processes per check", "", "", "", String(checkCmds));
    // Ratios: each iteration's own provider / baseline (the pair ran side by side), then the median.
    const byRound = (a: Trio[], b: Trio[]) => spread(a.map((x, j) => x.total / b[j]!.total));
    const vsShell = byRound(trios(P), W),
        vsLocal = byRound(trios(P), L),
        sshVsLocal = byRound(S, L),
        vsSsh = byRound(trios(P), S);
    const f2r = (x: number) => r2(x).toFixed(2);
    row(`  ratios, median of ${ITER} paired rounds`, "median", "min", "max", "of medians");
    row("  perOpVsShell provider/virsh shell", f2r(vsShell.med), f2r(vsShell.min), f2r(vsShell.max), f2r(prov / med(W, "total")));
    row("  perOpRatio provider/local", f2r(vsLocal.med), f2r(vsLocal.min), f2r(vsLocal.max), f2r(prov / local));
    row("  sshPerOpRatio freshSsh/local", f2r(sshVsLocal.med), f2r(sshVsLocal.min), f2r(sshVsLocal.max), f2r(ssh / local));
    row("  provider/freshSsh", f2r(vsSsh.med), f2r(vsSsh.min), f2r(vsSsh.max), f2r(prov / ssh));

    // Round trips: each iteration's (with the delay − without it) / RTT, paired within the iteration.
    const paired = (withDelay: Trio[], without: Trio[], k: keyof Trio, per = 1) =>
        withDelay.map((w, j) => (w[k] - without[j]![k]) / RTT_MS / per);
    const rtProv = spread(paired(trios(PD), trios(P), "total", 3)),
        rtSsh = spread(paired(SD, S, "total", 3));
    const rtRpc = {
        create: spread(paired(trios(PD), trios(P), "create")),
        read: spread(paired(trios(PD), trios(P), "read")),
        del: spread(paired(trios(PD), trios(P), "del")),
    };
    const measuredRtt = (rttBefore.proxied - rttBefore.direct + rttAfter.proxied - rttAfter.direct) / 2;
    const f2 = (x: number) => r2(x).toFixed(2);
    const cols = (x: ReturnType<typeof spread>) => [f2(x.med), f2(x.min), f2(x.max), `${f2(x.q1)} to ${f2(x.q3)}`];
    row(`over the delay proxy, ${RTT_MS} ms RTT: ${ITER} paired rounds`, "median", "min", "max", "middle half");
    row("  roundTripsPerOp (provider)", ...cols(rtProv));
    for (const k of ["create", "read", "del"] as const) {
        row(`    round trips in ${k === "del" ? "delete" : k}`, ...cols(rtRpc[k]));
    }
    row("  freshSshRoundTripsPerOp (fresh ssh)", ...cols(rtSsh));
    row("  create+read+delete, with / without delay", "provider", ms(med(trios(PD), "total")), ms(prov));
    row("", "fresh ssh", ms(med(SD, "total")), ms(ssh));
    row("  virsh processes per create+read+delete", "provider", String(cmdsPerTrioFar), String(cmdsPerTrio));
    row("  handshakes over the phase", "provider", String(handshakesFar), String(handshakesNear));
    row(
        "  proxy's RTT measured (echo), before/after",
        ms(rttBefore.proxied - rttBefore.direct),
        ms(rttAfter.proxied - rttAfter.direct),
        "",
    );
    row("  roundTripsPerOp at the measured RTT", "", "", f2((rtProv.med * RTT_MS) / measuredRtt));
    Object.assign(results, {
        perOpVsShell: r2(vsShell.med),
        perOpVsShellMin: r2(vsShell.min),
        perOpVsShellMax: r2(vsShell.max),
        perOpRatio: r2(vsLocal.med),
        perOpRatioMin: r2(vsLocal.min),
        perOpRatioMax: r2(vsLocal.max),
        sshPerOpRatio: r2(sshVsLocal.med),
        providerVsFreshSsh: r2(vsSsh.med),
        perOpShellMs: r1(med(W, "total")),
        perOpShellCreateMs: r1(med(W, "create")),
        perOpShellReadMs: r1(med(W, "read")),
        perOpShellDeleteMs: r1(med(W, "del")),
        perOpLocalMs: r1(local),
        perOpFreshSshMs: r1(ssh),
        perOpProviderMs: r1(prov),
        perOpProviderCreateMs: r1(med(trios(P), "create")),
        perOpProviderReadMs: r1(med(trios(P), "read")),
        perOpProviderDeleteMs: r1(med(trios(P), "del")),
        perOpLocalCreateMs: r1(med(L, "create")),
        perOpLocalReadMs: r1(med(L, "read")),
        perOpLocalDeleteMs: r1(med(L, "del")),
        checkMs: r1(median(checks)),
        virshProcessesPerOp: cmdsPerTrio,
        virshProcessesPerCheck: checkCmds,
        perOpHost: lab.name,
        roundTripsPerOp: r2(rtProv.med),
        roundTripsPerOpMin: r2(rtProv.min),
        roundTripsPerOpMax: r2(rtProv.max),
        roundTripsPerOpMiddleHalf: [r2(rtProv.q1), r2(rtProv.q3)],
        roundTripsCreate: r2(rtRpc.create.med),
        roundTripsRead: r2(rtRpc.read.med),
        roundTripsDelete: r2(rtRpc.del.med),
        freshSshRoundTripsPerOp: r2(rtSsh.med),
        freshSshRoundTripsPerOpMin: r2(rtSsh.min),
        freshSshRoundTripsPerOpMax: r2(rtSsh.max),
        delayRttMs: RTT_MS,
        delayProxyMeasuredRttMs: r1(measuredRtt),
        perOpProviderDelayedMs: r1(med(trios(PD), "total")),
        perOpFreshSshDelayedMs: r1(med(SD, "total")),
        virshProcessesPerOpDelayed: cmdsPerTrioFar,
        perOpHandshakesDelayed: handshakesFar,
    });
    shell.close();
    await provider.close();
}
