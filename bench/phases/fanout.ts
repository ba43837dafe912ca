// Fan-out: 50 creates over 5 fresh running domains, 10 in flight, as one `pulumi up` of
// "a snapshot per VM" would run them. Each round measures the ideal, local virsh with the
// same parallelism and the provider side by side; ratios are taken within a round. The
// provider's RSS over the round is the memory figure (peakRssMB).
import * as fs from "node:fs";
import * as path from "node:path";
import type { TestDomain } from "../../test/support/lab";
import { idealFanoutMs, timedLocalFanout, type SnapshotJob } from "../baselines";
import { FANOUT_DOMAINS, FANOUT_ROUNDS, FANOUT_SNAPSHOTS, MEM_DIR, PARALLEL } from "../config";
import { deleteSnapshotsLocally, newDomain, snapshotNames } from "../domains";
import { log, onCleanup } from "../lifecycle";
import { PeakRssSampler, cpuMs, hostCpu, median, ms, now, pool, r1, r2, reapedChildrenCpuMs, treeCpu, treeCpuSince } from "../measure";
import { spread } from "./per-op";
import { ProviderServer, type State } from "../provider-server";
import { results, row } from "../report";
import type { BenchSshd, SshdLog } from "../sshd";
import { serverFloorKb } from "./memory";

/** What the refresh phase goes on with: the domains, the last round's snapshots and its still-open provider. */
export interface FanoutOutcome {
    doms: TestDomain[];
    states: State[];
    provider: ProviderServer;
}

interface Round {
    ideal: number;
    localParallel: number;
    wall: number;
    checkWall: number;
    handshakes: number;
    checkCommands: number;
    createCommands: number;
    peakKb: number;
    startKb: number;
    localCpu: { client: number; libvirtd: number; qemu: number };
    providerCpu: { server: number; sshdAndVirsh: number; libvirtd: number; qemu: number };
    /** Of sshdAndVirsh: the processes the round started that still run at its end (its sshd connection and virsh shells), in full. */
    longLivedCpu: number;
}

export async function fanout(sshd: BenchSshd, sshdLog: SshdLog): Promise<FanoutOutcome> {
    log(`fan-out: ${FANOUT_SNAPSHOTS} snapshots over ${FANOUT_DOMAINS} fresh running domains, ${PARALLEL} in flight`);
    const doms = await Promise.all(Array.from({ length: FANOUT_DOMAINS }, () => newDomain("labtmp-bench-fan-")));
    const per = FANOUT_SNAPSHOTS / FANOUT_DOMAINS;
    // Round-robin over domains, as a program declaring "one snapshot per VM" ten times would.
    const jobs: SnapshotJob[] = Array.from({ length: FANOUT_SNAPSHOTS }, (_, i) => ({
        dom: doms[i % FANOUT_DOMAINS]!,
        name: `fan-${Math.floor(i / FANOUT_DOMAINS)}`,
    }));

    // Warm-up: the first snapshots of a fresh disk are several times slower (the qcow2 file grows
    // for the saved memory; later ones reuse the freed clusters), so every round starts warm.
    await timedLocalFanout(jobs);
    await deleteSnapshotsLocally(jobs);

    // Rounds, each side by side: the ideal, local virsh with the same parallelism, then the
    // provider in a fresh process (each `pulumi up` is one). Ratios are taken within a round.
    const rounds: Round[] = [];
    let provider: ProviderServer | undefined;
    let states: State[] = [];
    for (let round = 0; round < FANOUT_ROUNDS; round++) {
        if (provider) {
            await pool(PARALLEL, states, (s) => provider!.delete(s));
            await provider.close();
        }
        const ideal = await idealFanoutMs(jobs);
        await deleteSnapshotsLocally(jobs);
        // The local virsh processes are the benchmark's children: their CPU is its cutime+cstime once reaped.
        const c0 = reapedChildrenCpuMs(process.pid),
            h0 = hostCpu(doms.map((d) => d.name));
        const localParallel = await timedLocalFanout(jobs);
        const h1 = hostCpu(doms.map((d) => d.name));
        const localCpu = { client: reapedChildrenCpuMs(process.pid) - c0, libvirtd: h1.libvirtd - h0.libvirtd, qemu: h1.qemu - h0.qemu };
        await deleteSnapshotsLocally(jobs);

        // The sshd's processes before this round's server connects: what comes after (its connection,
        // the long-lived virsh shells started during the checks) is counted in full.
        const tree0 = treeCpu(sshd.pid);
        const p = (provider = await ProviderServer.start(sshd, `fanout${round}`));
        onCleanup(() => p.close());
        const startKb = p.status().rssKb;
        const rss = new PeakRssSampler(p.engine.pid, startKb);
        const m0 = sshdLog.mark();
        const tc0 = now();
        const checked = await pool(PARALLEL, jobs, (j) => p.check(j.dom.name, j.name));
        const checkWall = now() - tc0;
        const m1 = sshdLog.mark();
        const s0 = cpuMs(p.engine.pid),
            d0 = treeCpu(sshd.pid),
            h2 = hostCpu(doms.map((d) => d.name));
        const t0 = now();
        states = await pool(PARALLEL, checked, (c) => p.create(c.urn, c.inputs));
        const wall = now() - t0;
        if (MEM_DIR) {
            // Epoch ms, to line up with the timeline bench/memprof.ts writes from inside the server.
            fs.mkdirSync(MEM_DIR, { recursive: true });
            const marks = {
                checksStart: Date.now() - (now() - tc0),
                checksEnd: Date.now() - (now() - tc0 - checkWall),
                createsEnd: Date.now(),
            };
            fs.writeFileSync(path.join(MEM_DIR, `${p.label}-${p.engine.pid}.marks.json`), JSON.stringify(marks));
        }
        const h3 = hostCpu(doms.map((d) => d.name));
        const onHost = treeCpuSince(tree0, d0, treeCpu(sshd.pid));
        const providerCpu = {
            server: cpuMs(p.engine.pid) - s0,
            sshdAndVirsh: onHost.total,
            libvirtd: h3.libvirtd - h2.libvirtd,
            qemu: h3.qemu - h2.qemu,
        };
        const afterCreate = sshdLog.since(m1),
            all = sshdLog.since(m0);
        const peakKb = rss.stop();
        for (const d of doms) {
            const n = (await snapshotNames(d)).length;
            if (n !== per) throw new Error(`fan-out left ${n} snapshots on ${d.name}, expected ${per}`);
        }
        rounds.push({
            ideal,
            localParallel,
            wall,
            checkWall,
            handshakes: all.handshakes,
            checkCommands: all.commands - afterCreate.commands,
            createCommands: afterCreate.commands,
            peakKb,
            startKb,
            localCpu,
            providerCpu,
            longLivedCpu: onHost.longLived,
        });
        log(`  round ${round + 1}: ideal ${ms(ideal)}, local || ${ms(localParallel)}, provider ${ms(wall)} (${r2(wall / ideal)}x)`);
    }
    const medOf = (f: (r: Round) => number) => median(rounds.map(f));
    const localTotal = (r: Round) => r.localCpu.client + r.localCpu.libvirtd + r.localCpu.qemu,
        providerTotal = (r: Round) => r.providerCpu.server + r.providerCpu.sshdAndVirsh + r.providerCpu.libvirtd + r.providerCpu.qemu;
    const vsLocal = spread(rounds.map((r) => r.wall / r.localParallel)),
        cpuRatio = spread(rounds.map((r) => providerTotal(r) / localTotal(r)));
    const ratio = medOf((r) => r.wall / r.ideal),
        localRatio = medOf((r) => r.localParallel / r.ideal);
    const peakKb = Math.max(...rounds.map((r) => r.peakKb));
    const handshakes = Math.max(...rounds.map((r) => r.handshakes));
    row(`fan-out (50 creates, 5 domains, 10 in flight; median of ${rounds.length} rounds)`, "ideal", "local ||", "provider");
    row("  wall time of the creates", ms(medOf((r) => r.ideal)), ms(medOf((r) => r.localParallel)), ms(medOf((r) => r.wall)));
    row("  ratio to ideal (within each round)", "1.00", r2(localRatio).toFixed(2), r2(ratio).toFixed(2));
    row("  provider / local || (within each round)", "", "", r2(vsLocal.med).toFixed(2));
    row("    min / max over the rounds", "", "", `${r2(vsLocal.min).toFixed(2)} / ${r2(vsLocal.max).toFixed(2)}`);
    row("  checks before the creates (wall)", "", "", ms(medOf((r) => r.checkWall)));
    row("  SSH handshakes per process (max)", "", "", String(handshakes));
    row("  virsh processes on the host (check / create)", "", "", `${medOf((r) => r.checkCommands)} / ${medOf((r) => r.createCommands)}`);
    row("  provider RSS: at start / peak (VmHWM, max)", "", `${r1(medOf((r) => r.startKb) / 1024)} MB`, `${r1(peakKb / 1024)} MB`);
    const per50 = (x: number) => `${(x / jobs.length).toFixed(1)} ms`;
    row(
        "  CPU per create: virsh processes (local) / provider server",
        "",
        per50(medOf((r) => r.localCpu.client)),
        per50(medOf((r) => r.providerCpu.server)),
    );
    row("  CPU per create: sshd + virsh on the host", "", "", per50(medOf((r) => r.providerCpu.sshdAndVirsh)));
    row("    of which the connection's sshd and shells, own", "", "", per50(medOf((r) => r.longLivedCpu)));
    row("  CPU per create: libvirtd", "", per50(medOf((r) => r.localCpu.libvirtd)), per50(medOf((r) => r.providerCpu.libvirtd)));
    row("  CPU per create: qemu", "", per50(medOf((r) => r.localCpu.qemu)), per50(medOf((r) => r.providerCpu.qemu)));
    row("  CPU per create: total", "", per50(medOf(localTotal)), per50(medOf(providerTotal)));
    row(
        "  cpuPerCreateRatio provider/local (min, max)",
        "",
        "",
        `${r2(cpuRatio.med).toFixed(2)} (${r2(cpuRatio.min).toFixed(2)}, ${r2(cpuRatio.max).toFixed(2)})`,
    );
    const floor = await serverFloorKb(sshd, jobs.length);
    row("  same RPCs to a no-op provider: peak RSS", "", "", `${r1(floor / 1024)} MB`);
    row("  rssOverFloorMB (peak - no-op peak)", "", "", `${r1((peakKb - floor) / 1024)} MB`);
    Object.assign(results, {
        fanoutRatio: r2(ratio),
        fanoutMs: r1(medOf((r) => r.wall)),
        fanoutIdealMs: r1(medOf((r) => r.ideal)),
        fanoutLocalParallelMs: r1(medOf((r) => r.localParallel)),
        localFanoutRatio: r2(localRatio),
        fanoutRounds: rounds.map((r) => r2(r.wall / r.ideal)),
        fanoutCheckMs: r1(medOf((r) => r.checkWall)),
        fanoutVsLocalParallel: r2(vsLocal.med),
        fanoutVsLocalParallelMin: r2(vsLocal.min),
        fanoutVsLocalParallelMax: r2(vsLocal.max),
        cpuPerCreateRatio: r2(cpuRatio.med),
        cpuPerCreateRatioMin: r2(cpuRatio.min),
        cpuPerCreateRatioMax: r2(cpuRatio.max),
        fanoutCpuPerCreateMs: {
            local: {
                virsh: r1(medOf((r) => r.localCpu.client) / jobs.length),
                libvirtd: r1(medOf((r) => r.localCpu.libvirtd) / jobs.length),
                qemu: r1(medOf((r) => r.localCpu.qemu) / jobs.length),
            },
            provider: {
                server: r1(medOf((r) => r.providerCpu.server) / jobs.length),
                sshdAndVirsh: r1(medOf((r) => r.providerCpu.sshdAndVirsh) / jobs.length),
                longLivedInFull: r1(medOf((r) => r.longLivedCpu) / jobs.length),
                libvirtd: r1(medOf((r) => r.providerCpu.libvirtd) / jobs.length),
                qemu: r1(medOf((r) => r.providerCpu.qemu) / jobs.length),
            },
        },
        handshakesPerHost: handshakes,
        fanoutVirshProcesses: medOf((r) => r.createCommands),
        peakRssMB: r1(peakKb / 1024),
        startRssMB: r1(medOf((r) => r.startKb) / 1024),
        noopProviderPeakRssMB: r1(floor / 1024),
        rssOverFloorMB: r1((peakKb - floor) / 1024),
    });
    return { doms, states, provider: provider! };
}
