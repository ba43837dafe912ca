// CLI: end to end through the real Pulumi CLI (issue 22, item 5). `pulumi up` and `pulumi destroy`
// of CLI_SNAPSHOTS DomainSnapshots spread over fresh qcow2 domains of every lab host, against what
// users write instead: a shell loop of `ssh HOST virsh snapshot-create-as …`, a fresh system ssh
// per command, over the same link the provider uses (each host's lab sshd, its address and port,
// the lab's user and key), then the loop of `virsh snapshot-delete`.
//
// The program is inline (bench/cli-program.ts: the Node.js language host is not available here),
// so the CLI's engine plans, starts the dynamic-provider plugin and writes the state as under
// `pulumi up`, and the time is that of the `pulumi up` process itself. The program's process is
// started before it, so its own start (node and the SDK loading, which the language host would do
// inside a project directory's `pulumi up`) is measured apart and added in an estimate.
//
// Each round, side by side: the sequential loop (create, then delete), the same loop with all its
// ssh processes at once, and the CLI (up, preview, up with nothing to do, destroy); which of the
// two goes first alternates. After every step virsh on each host must show exactly the expected snapshots,
// so a failed run can't pass as a fast one.
import * as childProcess from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { allLabHosts, makeDomain, repoRoot, sshArgs, virshOk, type LabInfo, type TestDomain } from "../../test/support/lab";
import { cliEnv, pulumiCli } from "../../test/support/pulumiCli";
import { sshVirshVia } from "../baselines";
import type { CliOp, CliResult, CliSpec } from "../cli-program";
import { readTimeline, type Timeline } from "../cli-timeline";
import { CLI_ROUNDS, CLI_SNAPSHOTS } from "../config";
import { log, onCleanup } from "../lifecycle";
import { TreeCpuSampler, median, ms, now, r1, r2, reapedChildrenCpuMs } from "../measure";
import { results, row } from "../report";
import { SshdLog } from "../sshd";
import { spread } from "./per-op";

interface Job {
    host: LabInfo;
    dom: TestDomain;
    resource: string;
    name: string;
}

/**
 * Where a CLI run's CPU went (ms), by process: the `pulumi OP` process, the program's process (node, the SDK, the
 * Automation API), the dynamic-provider plugin (its launcher script and node processes), the rest (the SDK's other
 * CLI runs: stack selection, outputs, history).
 */
interface CliCpu {
    cli: number;
    program: number;
    provider: number;
    other: number;
}

interface CliRun {
    result: CliResult & { cliMs: number; apiMs: number };
    /** The child process, from spawn to exit (ms): node, the SDK, the stack's selection, the operation, its extra CLI runs. */
    childMs: number;
    cpu: CliCpu;
    /** Per host: SSH handshakes and remote commands (exec channels) its sshd logged during the run. */
    ssh: Record<string, { handshakes: number; commands: number }>;
    /** With a gRPC log: where the `pulumi OP` process spent its time. */
    timeline?: Timeline;
    /** When the dynamic-provider plugin's launcher was first seen, from the CLI's start (ms; sampled every 50 ms). */
    pluginLaunchedAt?: number;
}

interface Round {
    seqCreate: number;
    seqDelete: number;
    parCreate: number;
    parDelete: number;
    /** CPU (ms) of the ssh client processes of the sequential loops (create + delete). */
    loopCpu: number;
    up: CliRun;
    preview: CliRun;
    upNoop: CliRun;
    destroy: CliRun;
}

/** The sshd log of a lab host (LogLevel VERBOSE), written next to its pid file. */
function sshdLogOf(h: LabInfo): SshdLog {
    const file = path.join(path.dirname(h.sshdPidPath), "sshd.log");
    if (!fs.existsSync(file)) throw new Error(`no sshd log at ${file} for ${h.name}`);
    return new SshdLog(file);
}

function classify(p: { pid: number; cmdline: string }, programPid: number, op: string): keyof CliCpu {
    if (p.pid === programPid) return "program";
    if (/cmd\/dynamic-provider|pulumi-resource-pulumi-nodejs/.test(p.cmdline)) return "provider";
    if (new RegExp(`(^|/)pulumi ${op} `).test(p.cmdline)) return "cli";
    return "other";
}

export async function cli(): Promise<void> {
    const bin = pulumiCli().bin;
    const hosts = allLabHosts();
    // Fresh domains shaped as each host's own qcow2 domains (running or shut off, the writer guest or not;
    // not the real Linux guest, which boots a kernel under emulation), interleaved across the hosts so that
    // consecutive snapshots go to different hosts.
    const shapes = hosts.map((h) => h.domains.filter((d) => d.format === "qcow2" && !d.guest).map((d) => ({ h, d })));
    const order = Array.from({ length: Math.max(...shapes.map((s) => s.length)) }, (_, k) =>
        shapes.flatMap((s) => (s[k] ? [s[k]] : [])),
    ).flat();
    log(
        `cli: ${CLI_SNAPSHOTS} DomainSnapshots over ${order.length} fresh qcow2 domains on ${hosts.map((h) => h.name).join(" and ")}, ${CLI_ROUNDS} rounds`,
    );
    const doms = await Promise.all(
        order.map(async ({ h, d }) => {
            const dom = await makeDomain({ lab: h, prefix: "labtmp-bench-cli-", running: d.state === "running", writer: d.writer });
            onCleanup(() => dom.dispose());
            return { host: h, dom };
        }),
    );
    const jobs: Job[] = Array.from({ length: CLI_SNAPSHOTS }, (_, i) => ({
        ...doms[i % doms.length]!,
        resource: `snap-${i}`,
        name: `bench-cli-${i}`,
    }));
    const sshOf = new Map(hosts.map((h) => [h.name, sshArgs(h)]));
    const logs = new Map(hosts.map((h) => [h.name, sshdLogOf(h)]));

    /** Exactly the jobs' snapshots on each domain when present, none when not; anything else fails the phase. */
    const verify = async (present: boolean, step: string) => {
        for (const { host, dom } of doms) {
            const have = (await virshOk(["snapshot-list", "--domain", dom.name, "--name"], { lab: host }))
                .split("\n")
                .filter(Boolean)
                .sort();
            const want = present
                ? jobs
                      .filter((j) => j.dom === dom)
                      .map((j) => j.name)
                      .sort()
                : [];
            if (JSON.stringify(have) !== JSON.stringify(want))
                throw new Error(`cli: after ${step}, ${host.name} domain ${dom.name} has snapshots [${have}], expected [${want}]`);
        }
    };

    // The loops: `ssh HOST virsh snapshot-create-as DOMAIN NAME --atomic` (an internal snapshot, with the memory
    // of a running domain, as DomainSnapshot's defaults: kind internal, atomic true), then snapshot-delete.
    const createArgs = (j: Job) => ["snapshot-create-as", "--domain", j.dom.name, "--name", j.name, "--atomic"];
    const deleteArgs = (j: Job) => ["snapshot-delete", "--domain", j.dom.name, "--snapshotname", j.name];
    const viaSsh = (j: Job, args: string[]) => sshVirshVia(sshOf.get(j.host.name)!, j.host.libvirtUri, args);
    /** The sequential loop's wall time, and the CPU of its ssh clients (this process's reaped children). */
    const seqLoop = async (args: (j: Job) => string[]) => {
        const c0 = reapedChildrenCpuMs(process.pid),
            t0 = now();
        for (const j of jobs) await viaSsh(j, args(j));
        return { ms: now() - t0, cpu: reapedChildrenCpuMs(process.pid) - c0 };
    };
    const parLoop = async (args: (j: Job) => string[]) => {
        const t0 = now();
        await Promise.all(jobs.map((j) => viaSsh(j, args(j))));
        return now() - t0;
    };

    // The stack: its own PULUMI_HOME, file backend and passphrase, under .build/ of this checkout so that the
    // dynamic-provider plugin (started in the project's folder) loads this checkout's build.
    const dir = path.join(repoRoot(), ".build", "bench-cli");
    // The traced round's gRPC logs hold decrypted inputs: under .lab/ in a 0700 folder, each created 0600, read for
    // times only and removed at once (readTimeline).
    const grpcDir = path.join(repoRoot(), ".lab", "bench-cli");
    fs.rmSync(dir, { recursive: true, force: true });
    for (const sub of ["work", "state", "home"]) fs.mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o700 });
    onCleanup(async () => {
        fs.rmSync(dir, { recursive: true, force: true });
        fs.rmSync(grpcDir, { recursive: true, force: true });
    });
    const env = { ...process.env, ...cliEnv(bin, dir, crypto.randomBytes(18).toString("base64url")) };
    const spec = (op: CliOp, snapshots: Job[]): CliSpec => ({
        project: "bench-cli",
        stack: "bench",
        workDir: path.join(dir, "work"),
        op,
        hosts: Object.fromEntries(
            hosts.map((h) => [h.name, { host: h.host, port: h.port, user: h.user, hostKey: h.hostKey, privateKeyPath: h.privateKeyPath }]),
        ),
        snapshots: snapshots.map((j) => ({ resource: j.resource, host: j.host.name, domain: j.dom.name, snapshotName: j.name })),
    });
    let seq = 0;
    const cliRun = async (op: CliOp, snapshots: Job[] = jobs, traced = false): Promise<CliRun> => {
        const specFile = path.join(dir, `spec-${++seq}.json`),
            resultFile = path.join(dir, `result-${seq}.json`),
            grpcLog = path.join(grpcDir, `grpc-${process.pid}-${seq}.log`);
        fs.writeFileSync(specFile, JSON.stringify(spec(op, snapshots)), { mode: 0o600 });
        if (traced) {
            fs.mkdirSync(grpcDir, { recursive: true, mode: 0o700 });
            fs.writeFileSync(grpcLog, "", { mode: 0o600 });
        }
        const marks = new Map([...logs].map(([n, l]) => [n, l.mark()]));
        const t0 = now();
        const child = childProcess.spawn(process.execPath, [path.join(__dirname, "..", "cli-program.js"), specFile, resultFile], {
            env: traced ? { ...env, PULUMI_DEBUG_GRPC: grpcLog } : env,
            cwd: path.join(dir, "work"),
            stdio: ["ignore", "ignore", "pipe"],
        });
        const sampler = new TreeCpuSampler(child.pid!);
        let stderr = "";
        child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
        const code = await new Promise<number | null>((res) => child.once("exit", res));
        const childMs = now() - t0;
        const cpu: CliCpu = { cli: 0, program: 0, provider: 0, other: 0 };
        let pluginSeen = Infinity;
        for (const p of sampler.stop()) {
            const k = classify(p, child.pid!, op === "upNoChanges" ? "up" : op);
            cpu[k] += p.ms;
            if (k === "provider") pluginSeen = Math.min(pluginSeen, p.firstSeen);
        }
        const ssh = Object.fromEntries([...logs].map(([n, l]) => [n, l.since(marks.get(n)!)]));
        let result: CliResult;
        let timeline: Timeline | undefined;
        try {
            result = JSON.parse(fs.readFileSync(resultFile, "utf8")) as CliResult;
            if (traced && result.ok) timeline = readTimeline(grpcLog, result.startedAt!);
        } catch {
            throw new Error(`cli: pulumi ${op} wrote no result (exit ${code}): ${stderr.slice(-3000)}`);
        } finally {
            fs.rmSync(specFile, { force: true });
            fs.rmSync(resultFile, { force: true });
            fs.rmSync(grpcLog, { force: true });
        }
        if (!result.ok) throw new Error(`cli: pulumi ${op} failed: ${result.error}\n${result.stdout.slice(-4000)}`);
        const pluginLaunchedAt = Number.isFinite(pluginSeen) ? pluginSeen - result.startedAt! : undefined;
        return { result: result as CliRun["result"], childMs, cpu, ssh, timeline, pluginLaunchedAt };
    };
    const changes = (r: CliRun) => r.result.changeSummary ?? {};
    const onlyOps = (r: CliRun, op: string, step: string) => {
        const c = changes(r);
        // The stack's own resource may count besides the snapshots.
        if (Object.keys(c).some((k) => k !== op && k !== "same") || (c[op] ?? 0) < CLI_SNAPSHOTS)
            throw new Error(`cli: ${step} reported ${JSON.stringify(c)}, expected ${op} of ${CLI_SNAPSHOTS} DomainSnapshots`);
    };

    // Warm-up (not measured): the fresh disks' first snapshots grow their files; the stack is made, and its
    // first preview (of nothing) warms the CLI, the plugin and their files. Its time is shown as the floor.
    await seqLoop(createArgs);
    await verify(true, "the warm-up loop");
    await seqLoop(deleteArgs);
    await verify(false, "the warm-up loop's deletes");
    await cliRun("init", []);
    const emptyPreview = await cliRun("preview", []);

    /** up, preview, up with nothing to do, destroy; each checked with virsh. */
    const pulumi = async (traced = false) => {
        const up = await cliRun("up", jobs, traced);
        onlyOps(up, "create", "pulumi up");
        await verify(true, "pulumi up");
        const preview = await cliRun("preview", jobs, traced);
        onlyOps(preview, "same", "pulumi preview");
        await verify(true, "pulumi preview");
        const upNoop = await cliRun("upNoChanges", jobs, traced);
        onlyOps(upNoop, "same", "pulumi up with nothing to do");
        await verify(true, "pulumi up with nothing to do");
        const destroy = await cliRun("destroy", jobs, traced);
        onlyOps(destroy, "delete", "pulumi destroy");
        await verify(false, "pulumi destroy");
        return { up, preview, upNoop, destroy };
    };

    const rounds: Round[] = [];
    for (let round = 0; round < CLI_ROUNDS; round++) {
        const loops = async () => {
            const seqCreate = await seqLoop(createArgs);
            await verify(true, "the sequential create loop");
            const seqDelete = await seqLoop(deleteArgs);
            await verify(false, "the sequential delete loop");
            const parCreate = await parLoop(createArgs);
            await verify(true, "the parallel create loop");
            const parDelete = await parLoop(deleteArgs);
            await verify(false, "the parallel delete loop");
            return { seqCreate: seqCreate.ms, seqDelete: seqDelete.ms, parCreate, parDelete, loopCpu: seqCreate.cpu + seqDelete.cpu };
        };
        const r = round % 2 ? { ...(await pulumi()), ...(await loops()) } : { ...(await loops()), ...(await pulumi()) };
        rounds.push(r);
        log(
            `  round ${round + 1}: pulumi up ${ms(r.up.result.cliMs)} / loop ${ms(r.seqCreate)} (|| ${ms(r.parCreate)}); ` +
                `destroy ${ms(r.destroy.result.cliMs)} / loop ${ms(r.seqDelete)} (|| ${ms(r.parDelete)}); ` +
                `preview ${ms(r.preview.result.cliMs)}, up with nothing to do ${ms(r.upNoop.result.cliMs)}`,
        );
    }
    // One more round, not measured: the CLI logs its gRPC calls (which slows it), to show where its time goes.
    log("  a traced round (PULUMI_DEBUG_GRPC), for the timeline");
    const traced = await pulumi(true);
    report(rounds, emptyPreview, hosts);
    reportTimeline(traced);
}

function reportTimeline(runs: Record<"up" | "preview" | "upNoop" | "destroy", CliRun>): void {
    const r0 = (x: number | undefined) => (x === undefined ? "-" : `${Math.round(x)}`);
    row("cli timeline (one traced round; ms from the CLI's start)", "wall", "program", "plugin seen", "plugin ready");
    const out: Record<string, unknown> = {};
    for (const [label, k] of [
        ["pulumi up", "up"],
        ["pulumi preview", "preview"],
        ["pulumi up, nothing to do", "upNoop"],
        ["pulumi destroy", "destroy"],
    ] as const) {
        const t = runs[k].timeline!;
        row(`  ${label}`, r0(runs[k].result.cliMs), r0(t.programAt), r0(runs[k].pluginLaunchedAt), r0(t.pluginAt));
        for (const [m, s] of Object.entries(t.methods))
            row(
                `    ${m} x${s.n}: first start → last end`,
                `${r0(s.firstStart)} → ${r0(s.lastEnd)}`,
                `sum ${r0(s.sumMs)}`,
                `median ${r0(s.medianMs)}`,
                `${s.maxInFlight} at once`,
            );
        out[k] = {
            wallMs: r1(runs[k].result.cliMs),
            programAt: t.programAt === undefined ? null : r1(t.programAt),
            pluginLaunchedAt: runs[k].pluginLaunchedAt === undefined ? null : r1(runs[k].pluginLaunchedAt!),
            pluginAt: t.pluginAt === undefined ? null : r1(t.pluginAt),
            ...Object.fromEntries(
                Object.entries(t.methods).map(([m, s]) => [
                    m,
                    {
                        n: s.n,
                        firstStart: r1(s.firstStart),
                        lastEnd: r1(s.lastEnd),
                        sumMs: r1(s.sumMs),
                        medianMs: r1(s.medianMs),
                        maxInFlight: s.maxInFlight,
                    },
                ]),
            ),
        };
    }
    results.cliTimeline = out;
}

function report(rounds: Round[], emptyPreview: CliRun, hosts: LabInfo[]): void {
    const n = CLI_SNAPSHOTS;
    const medOf = (f: (r: Round) => number) => median(rounds.map(f));
    const f2 = (x: number) => r2(x).toFixed(2);
    const upRatio = spread(rounds.map((r) => r.up.result.cliMs / r.seqCreate)),
        destroyRatio = spread(rounds.map((r) => r.destroy.result.cliMs / r.seqDelete)),
        upVsPar = spread(rounds.map((r) => r.up.result.cliMs / r.parCreate)),
        destroyVsPar = spread(rounds.map((r) => r.destroy.result.cliMs / r.parDelete));
    const cpuRow = (label: string, f: (r: Round) => CliRun) =>
        row(
            label,
            `${r1(medOf((r) => f(r).cpu.cli))} ms`,
            `${r1(medOf((r) => f(r).cpu.program))} ms`,
            `${r1(medOf((r) => f(r).cpu.provider))} ms`,
            `${r1(medOf((r) => f(r).cpu.other))} ms`,
        );
    const sshRow = (label: string, f: (r: Round) => CliRun) =>
        row(label, ...hosts.map((h) => `${medOf((r) => f(r).ssh[h.name]!.handshakes)} / ${medOf((r) => f(r).ssh[h.name]!.commands)}`));
    row(`cli (${n} DomainSnapshots, ${hosts.length} hosts; median of ${rounds.length} rounds)`, "ssh loop", "ssh loop ||", "pulumi");
    row("  create (wall)", ms(medOf((r) => r.seqCreate)), ms(medOf((r) => r.parCreate)), ms(medOf((r) => r.up.result.cliMs)));
    row("  delete (wall)", ms(medOf((r) => r.seqDelete)), ms(medOf((r) => r.parDelete)), ms(medOf((r) => r.destroy.result.cliMs)));
    row("  cliUpVsSshLoop (min, max)", "", "", `${f2(upRatio.med)} (${f2(upRatio.min)}, ${f2(upRatio.max)})`);
    row("  cliDestroyVsSshLoop (min, max)", "", "", `${f2(destroyRatio.med)} (${f2(destroyRatio.min)}, ${f2(destroyRatio.max)})`);
    row("  pulumi up / the loop in parallel", "", "", f2(upVsPar.med));
    row("  pulumi destroy / the loop in parallel", "", "", f2(destroyVsPar.med));
    row("  pulumi preview (20 unchanged; of nothing)", "", ms(emptyPreview.result.cliMs), ms(medOf((r) => r.preview.result.cliMs)));
    row("  pulumi up with nothing to do", "", "", ms(medOf((r) => r.upNoop.result.cliMs)));
    const withLoad = spread(rounds.map((r) => (r.up.result.cliMs + r.up.result.programLoadMs) / r.seqCreate));
    row("  the program's own start (node, the SDK)", "", "", ms(medOf((r) => r.up.result.programLoadMs)));
    row("  (pulumi up + that start) / the loop: estimate", "", "", `${f2(withLoad.med)} (${f2(withLoad.min)}, ${f2(withLoad.max)})`);
    row("  up: SDK call / whole child process", "", "", `${ms(medOf((r) => r.up.result.apiMs))} / ${ms(medOf((r) => r.up.childMs))}`);
    row("  CPU: ssh clients of the loops (create+delete)", ms(medOf((r) => r.loopCpu)), "", "");
    row("  CPU by process", "CLI", "program", "provider", "other");
    cpuRow("    pulumi up", (r) => r.up);
    cpuRow("    pulumi destroy", (r) => r.destroy);
    cpuRow("    pulumi preview", (r) => r.preview);
    row("  SSH handshakes / exec channels", ...hosts.map((h) => h.name));
    sshRow("    pulumi up", (r) => r.up);
    sshRow("    pulumi destroy", (r) => r.destroy);
    sshRow("    pulumi preview", (r) => r.preview);
    const cpuOf = (f: (r: Round) => CliRun) => ({
        cli: r1(medOf((r) => f(r).cpu.cli)),
        program: r1(medOf((r) => f(r).cpu.program)),
        provider: r1(medOf((r) => f(r).cpu.provider)),
        other: r1(medOf((r) => f(r).cpu.other)),
    });
    Object.assign(results, {
        cliUpVsSshLoop: r2(upRatio.med),
        cliUpVsSshLoopMin: r2(upRatio.min),
        cliUpVsSshLoopMax: r2(upRatio.max),
        cliDestroyVsSshLoop: r2(destroyRatio.med),
        cliDestroyVsSshLoopMin: r2(destroyRatio.min),
        cliDestroyVsSshLoopMax: r2(destroyRatio.max),
        cliUpVsParallelLoop: r2(upVsPar.med),
        cliDestroyVsParallelLoop: r2(destroyVsPar.med),
        cliUpMs: r1(medOf((r) => r.up.result.cliMs)),
        cliDestroyMs: r1(medOf((r) => r.destroy.result.cliMs)),
        cliSshLoopCreateMs: r1(medOf((r) => r.seqCreate)),
        cliSshLoopDeleteMs: r1(medOf((r) => r.seqDelete)),
        cliSshParallelCreateMs: r1(medOf((r) => r.parCreate)),
        cliSshParallelDeleteMs: r1(medOf((r) => r.parDelete)),
        cliPreviewMs: r1(medOf((r) => r.preview.result.cliMs)),
        cliPreviewEmptyMs: r1(emptyPreview.result.cliMs),
        cliUpNoopMs: r1(medOf((r) => r.upNoop.result.cliMs)),
        cliUpApiMs: r1(medOf((r) => r.up.result.apiMs)),
        cliProgramLoadMs: r1(medOf((r) => r.up.result.programLoadMs)),
        cliUpWithProgramLoadVsSshLoop: r2(withLoad.med),
        cliUpChildMs: r1(medOf((r) => r.up.childMs)),
        cliRounds: rounds.map((r) => ({
            up: r2(r.up.result.cliMs / r.seqCreate),
            destroy: r2(r.destroy.result.cliMs / r.seqDelete),
        })),
        cliCpuMs: {
            up: cpuOf((r) => r.up),
            destroy: cpuOf((r) => r.destroy),
            preview: cpuOf((r) => r.preview),
            loops: r1(medOf((r) => r.loopCpu)),
        },
        cliSsh: Object.fromEntries(
            hosts.map((h) => [
                h.name,
                Object.fromEntries(
                    (["up", "destroy", "preview"] as const).map((k) => [
                        k,
                        { handshakes: medOf((r) => r[k].ssh[h.name]!.handshakes), commands: medOf((r) => r[k].ssh[h.name]!.commands) },
                    ]),
                ),
            ]),
        ),
    });
}
