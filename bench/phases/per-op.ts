// Per operation: create → read → delete on one warm provider process, against local
// virsh (A) and a fresh ssh per command (B), interleaved in rotating order within each
// iteration so that all three see the same load.
import { localTrio, sshTrio } from "../baselines";
import { ITER, WARMUP } from "../config";
import { newDomain } from "../domains";
import { log, onCleanup } from "../lifecycle";
import { median, ms, now, r1, r2, type Trio } from "../measure";
import { ProviderServer } from "../provider-server";
import { results, row } from "../report";
import type { BenchSshd, SshdLog } from "../sshd";

export async function perOperation(sshd: BenchSshd, sshdLog: SshdLog): Promise<void> {
    log(`per-operation: ${WARMUP} warm-up + ${ITER} iterations, interleaved`);
    const dom = await newDomain("labtmp-bench-op-");
    const provider = await ProviderServer.start(sshd, "perop");
    onCleanup(() => provider.close());
    const L: Trio[] = [],
        S: Trio[] = [],
        P: Array<Trio & { check: number }> = [];
    const cmdsPerTrio: number[] = [],
        checkCmds: number[] = [];
    for (let i = 0; i < WARMUP + ITER; i++) {
        const order = [0, 1, 2].map((k) => (k + i) % 3);
        for (const which of order) {
            const name = `bench-${i}-${which}`;
            if (which === 0) {
                const t = await localTrio(dom.uuid, name);
                if (i >= WARMUP) L.push(t);
            }
            if (which === 1) {
                const t = await sshTrio(sshd, dom.uuid, name);
                if (i >= WARMUP) S.push(t);
            }
            if (which === 2) {
                const m0 = sshdLog.mark();
                const { urn, inputs } = await provider.check(dom.name, name);
                const m1 = sshdLog.mark();
                const tc0 = now();
                const s = await provider.create(urn, inputs);
                const tc1 = now();
                await provider.read(s);
                const tc2 = now();
                await provider.delete(s);
                const tc3 = now();
                if (i >= WARMUP) {
                    P.push({ check: NaN, create: tc1 - tc0, read: tc2 - tc1, del: tc3 - tc2, total: tc3 - tc0 });
                    checkCmds.push(sshdLog.since(m0).commands - sshdLog.since(m1).commands);
                    cmdsPerTrio.push(sshdLog.since(m1).commands);
                }
            }
        }
    }
    // Check is timed on its own (a create's Check happens at preview and again at up).
    const checks: number[] = [];
    for (let i = 0; i < 10; i++) {
        const t0 = now();
        await provider.check(dom.name, `bench-check-${i}`);
        checks.push(now() - t0);
    }
    const med = (xs: Trio[], k: keyof Trio) => median(xs.map((x) => x[k]));
    const local = med(L, "total"),
        ssh = med(S, "total"),
        prov = med(P, "total");
    row("per operation (median of " + ITER + ")", "local virsh", "fresh ssh", "provider");
    for (const k of ["create", "read", "del", "total"] as const) {
        row(`  ${k === "del" ? "delete" : k}`, ms(med(L, k)), ms(med(S, k)), ms(med(P, k)));
    }
    row("  provider check (not in total)", "", "", ms(median(checks)));
    row("  virsh processes per create+read+delete", "3", "3", String(median(cmdsPerTrio)));
    row("  virsh processes per check", "", "", String(median(checkCmds)));
    row("  perOpRatio provider/local", "", "", r2(prov / local).toFixed(2));
    row("  sshPerOpRatio freshSsh/local", "", r2(ssh / local).toFixed(2), "");
    row("  provider/freshSsh", "", "", r2(prov / ssh).toFixed(2));
    Object.assign(results, {
        perOpRatio: r2(prov / local),
        sshPerOpRatio: r2(ssh / local),
        providerVsFreshSsh: r2(prov / ssh),
        perOpLocalMs: r1(local),
        perOpFreshSshMs: r1(ssh),
        perOpProviderMs: r1(prov),
        perOpProviderCreateMs: r1(med(P, "create")),
        perOpProviderReadMs: r1(med(P, "read")),
        perOpProviderDeleteMs: r1(med(P, "del")),
        perOpLocalCreateMs: r1(med(L, "create")),
        perOpLocalReadMs: r1(med(L, "read")),
        perOpLocalDeleteMs: r1(med(L, "del")),
        checkMs: r1(median(checks)),
        virshProcessesPerOp: median(cmdsPerTrio),
        virshProcessesPerCheck: median(checkCmds),
    });
    await provider.close();
}
