// npm run bench: the provider's cost against virsh's own, measured side by side.
//
// Everything goes through the engine path (the SDK's serialized provider run
// by @pulumi/pulumi's dynamic-provider server over gRPC, as `pulumi up` does)
// and over SSH to the lab, which is what users run. Baselines run the same
// virsh commands locally with execFile (A) and through a fresh `ssh` per
// command (B). The machine is shared and noisy, so every comparison is taken
// interleaved in one run and reported as a ratio of medians.
//
// The benchmark starts its own sshd: the lab's binary and sshd_config (same
// MaxSessions, LogLevel VERBOSE), on another loopback port with its own log,
// so handshakes ("Accepted publickey") and remote commands ("Starting
// session: command") are counted exactly even while other sessions use the
// lab's sshd.
//
// The per-operation phase also reaches that sshd through the lab's delay proxy
// (scripts/lab/delay-proxy.cjs, BENCH_RTT_MS of round trip), as if the host were far
// away, and reports how many round trips one operation waits for (bench/delay.ts).
//
// The CLI phase runs `pulumi up` and `pulumi destroy` of 20 DomainSnapshots over both lab hosts with
// the lab's real Pulumi CLI (an inline program: bench/cli-program.ts), against a shell loop of
// `ssh HOST virsh …`, a fresh ssh per command (bench/phases/cli.ts).
//
// This file runs the phases (bench/phases/) in order and prints the report.
// Helpers: config.ts (these variables), measure.ts (timing, stats, CPU and RSS),
// report.ts (table and JSON line), baselines.ts (local virsh, fresh ssh),
// provider-server.ts (the provider under test), sshd.ts, delay.ts, domains.ts, lifecycle.ts.
//
// Env (all optional):
//   BENCH_QUICK=1         fewer iterations and rounds (6 per-op iterations, 1 fan-out and hosts50 round, 4 scale
//                         iterations): to try a change; quote figures only from a full run
//   BENCH_ITER            per-operation iterations (default 30)
//   BENCH_RTT_MS          the delay proxy's round trip in the per-operation phase (default 25)
//   BENCH_HOST            the lab host, as LAB_HOST for the tests (default debian12); debian13, reached
//                         over SSH, runs the per-operation phase only, against that host's own sshd
//   BENCH_SCALE_ITER      scale iterations per count (default 15)
//   BENCH_FANOUT_ROUNDS   fan-out rounds (default 3)
//   BENCH_HOSTS, BENCH_HOSTS_ROUNDS   the hosts50 phase's SSH endpoints (default 50) and rounds (default 3)
//   BENCH_CLI_ROUNDS      rounds of the CLI phase (default 3, BENCH_QUICK 1): each round one sequential and one
//                         parallel ssh loop (create, delete) and pulumi up, preview, up with nothing to do, destroy
//   BENCH_SKIP            comma list of phases to skip: perop, fanout (with refresh), hosts50, scale, cli
//   BENCH_PACKAGE_ROOT    run the provider from another checkout (e.g. an older commit) for before/after
//   BENCH_CPU_PROF=DIR    write a V8 CPU profile of each provider server there (bench/cpuprof.ts)
//   BENCH_MEM_PROF=DIR    write each provider server's memory timeline and module-load costs there (bench/memprof.ts);
//                         with BENCH_MEM_ALLOC=1 also a sampling heap profile of every allocation, garbage included,
//                         with BENCH_MEM_TRACE_GC=1 --trace-gc in the servers' output (see BENCH_SERVER_LOG_DIR)
//   BENCH_SERVER_NODE_OPTIONS, BENCH_SERVER_LOG_DIR   NODE_OPTIONS for, and the output of, the servers
import { createRequire } from "node:module";
import * as os from "node:os";
import * as path from "node:path";
import { virshLocalOk } from "./baselines";
import { SERVER_CWD, SKIP, lab } from "./config";
import { cleanupAll, log, onCleanup } from "./lifecycle";
import { now, r1, r2 } from "./measure";
import { cli } from "./phases/cli";
import { fanout } from "./phases/fanout";
import { hosts50 } from "./phases/hosts50";
import { perOperation } from "./phases/per-op";
import { refresh } from "./phases/refresh";
import { scale } from "./phases/scale";
import { printReport, results, row } from "./report";
import { SshdLog, labHostEndpoint, startSshd } from "./sshd";

async function machine(): Promise<Record<string, unknown>> {
    const virshVersion = await virshLocalOk(["version"]);
    return {
        nproc: os.cpus().length,
        memMB: Math.round(os.totalmem() / 2 ** 20),
        virtType: lab.virtType,
        libvirt: /Running against daemon: ([\d.]+)/.exec(virshVersion)?.[1] ?? lab.libvirtVersion,
        qemu: /Running hypervisor: QEMU ([\d.]+)/.exec(virshVersion)?.[1] ?? lab.qemuVersion,
        node: process.version,
        loadavg: os.loadavg().map(r2),
    };
}

async function main(): Promise<void> {
    const started = now();
    const m = await machine();
    log(`machine: ${JSON.stringify(m)}`);
    // The server loads the provider text with require-from-string, which resolves from its cwd.
    log(`provider from ${createRequire(path.join(SERVER_CWD, "__bench__.js")).resolve("pulumi-libvirt-snapshots/impl")}`);
    try {
        if (lab.local) await onThisMachine();
        else await onRemoteHost();
    } finally {
        await cleanupAll();
    }
    const loadavgEnd = os.loadavg().map(r2);
    row("load average (1, 5, 15 min) at start / end", (m.loadavg as number[]).join(", "), loadavgEnd.join(", "));
    Object.assign(results, { machine: { ...m, loadavgEnd }, runtimeS: r1((now() - started) / 1000) });
    printReport();
}

/** The lab host on this machine: every phase, against the benchmark's own sshd. */
async function onThisMachine(): Promise<void> {
    const sshd = await startSshd();
    onCleanup(() => sshd.stop());
    const sshdLog = new SshdLog(sshd.log);
    log(`private sshd on 127.0.0.1:${sshd.port} (lab config), log ${sshd.log}`);
    if (!SKIP.has("perop")) await perOperation(sshd, sshdLog);
    if (!SKIP.has("fanout")) {
        // The refresh reads the fan-out's snapshots, so it runs (and is skipped) with it.
        const afterFanout = await fanout(sshd, sshdLog);
        await refresh(sshd, sshdLog, afterFanout);
    }
    if (!SKIP.has("hosts50")) await hosts50();
    if (!SKIP.has("scale")) await scale(sshd);
    if (!SKIP.has("cli")) await cli();
}

/**
 * A lab host reached over SSH (BENCH_HOST=debian13): the per-operation phase only, against
 * that host's own sshd, which others use too. The other phases count CPU in the sshd's
 * process tree and need an sshd of their own, which that host does not give the benchmark.
 */
async function onRemoteHost(): Promise<void> {
    const host = labHostEndpoint();
    onCleanup(async () => host.dispose());
    log(`${lab.name}: its own sshd at ${host.host}:${host.port}, log ${host.log}; the per-operation phase only`);
    if (!SKIP.has("perop")) await perOperation(host, new SshdLog(host.log), true);
}

main().catch(async (e) => {
    console.error(`bench failed: ${(e as Error).stack ?? e}`);
    await cleanupAll();
    process.exit(1);
});
