// Refresh: 50 more snapshots on the fan-out's domains so that 100 exist, then a fresh
// provider process (a new `pulumi refresh`) reads them all, 10 in flight, against the same
// reads with local virsh; then it deletes them all.
import { timedLocalReads } from "../baselines";
import { FANOUT_DOMAINS, FANOUT_SNAPSHOTS, PARALLEL, REFRESH_COUNT } from "../config";
import { snapshotNames } from "../domains";
import { log, onCleanup } from "../lifecycle";
import { ms, now, pool, r1 } from "../measure";
import { ProviderServer } from "../provider-server";
import { results, row } from "../report";
import type { BenchSshd, SshdLog } from "../sshd";
import type { FanoutOutcome } from "./fanout";

export async function refresh(sshd: BenchSshd, sshdLog: SshdLog, { doms, states, provider: last }: FanoutOutcome): Promise<void> {
    const more = Array.from({ length: REFRESH_COUNT - FANOUT_SNAPSHOTS }, (_, i) => ({
        dom: doms[i % FANOUT_DOMAINS]!,
        name: `ref-${Math.floor(i / FANOUT_DOMAINS)}`,
    }));
    const moreStates = await pool(PARALLEL, more, async (j) => {
        const c = await last.check(j.dom.name, j.name);
        return last.create(c.urn, c.inputs);
    });
    await last.close();
    const everything = [...states, ...moreStates];

    log(`refresh: ${everything.length} reads on a fresh provider process, ${PARALLEL} in flight`);
    const refresher = await ProviderServer.start(sshd, "refresh");
    onCleanup(() => refresher.close());
    const rm = sshdLog.mark();
    const r0 = now();
    await pool(PARALLEL, everything, (s) => refresher.read(s));
    const refreshMs = now() - r0;
    const rc = sshdLog.since(rm);
    const localRefreshMs = await timedLocalReads(everything);
    const d0 = now();
    await pool(PARALLEL, everything, (s) => refresher.delete(s));
    const deleteMs = now() - d0;
    const refreshRss = refresher.status();
    await refresher.close();
    for (const d of doms) {
        const left = await snapshotNames(d);
        if (left.length) throw new Error(`delete left ${left.length} snapshots on ${d.name}`);
    }
    row(`refresh (${everything.length} reads, fresh process, 10 in flight)`, "", "local ||", "provider");
    row("  wall time", "", ms(localRefreshMs), ms(refreshMs));
    row("  virsh processes started on the host", "", String(everything.length), String(rc.commands));
    row("  SSH handshakes", "", "", String(rc.handshakes));
    row(`  then delete all ${everything.length} (wall)`, "", "", ms(deleteMs));
    Object.assign(results, {
        refreshMs: r1(refreshMs),
        refreshLocalMs: r1(localRefreshMs),
        refreshVirshProcesses: rc.commands,
        refreshHandshakes: rc.handshakes,
        deleteAllMs: r1(deleteMs),
        refreshPeakRssMB: r1(refreshRss.hwmKb / 1024),
    });
}
