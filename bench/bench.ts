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
// Env (all optional):
//   BENCH_ITER            per-operation iterations (default 30)
//   BENCH_SCALE_ITER      scale iterations per count (default 15)
//   BENCH_FANOUT_ROUNDS   fan-out rounds (default 3)
//   BENCH_SKIP            comma list of phases to skip: perop, fanout (with refresh), scale
//   BENCH_PACKAGE_ROOT    run the provider from another checkout (e.g. an older commit) for before/after
//   BENCH_CPU_PROF=DIR    write a V8 CPU profile of each provider server there (bench/cpuprof.ts)
//   BENCH_MEM_PROF=DIR    write each provider server's memory timeline and module-load costs there (bench/memprof.ts);
//                         with BENCH_MEM_ALLOC=1 also a sampling heap profile of every allocation, garbage included,
//                         with BENCH_MEM_TRACE_GC=1 --trace-gc in the servers' output (see BENCH_SERVER_LOG_DIR)
//   BENCH_SERVER_NODE_OPTIONS, BENCH_SERVER_LOG_DIR   NODE_OPTIONS for, and the output of, the servers
import * as childProcess from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { DomainSnapshotProvider } from "pulumi-libvirt-snapshots";
import { bareProvider } from "../test/fixtures/echo-provider";
import { EngineHarness, PACKAGE_ROOT, dynamicType, type Props } from "../test/harness/engine";
import { loadLab, makeDomain, run, type LabInfo, type TestDomain } from "../test/support/lab";

const TYPE = dynamicType("libvirt-snapshots", "DomainSnapshot");
const ITER = Number(process.env.BENCH_ITER ?? 30);
const WARMUP = 3;
const SCALE_ITER = Number(process.env.BENCH_SCALE_ITER ?? 15);
const SCALE_COUNTS = [1, 50, 200];
const FANOUT_DOMAINS = 5, FANOUT_SNAPSHOTS = 50, PARALLEL = 10, REFRESH_COUNT = 100;
const FANOUT_ROUNDS = Number(process.env.BENCH_FANOUT_ROUNDS ?? 3);
const SKIP = new Set((process.env.BENCH_SKIP ?? "").split(",").filter(Boolean));
const PROF_DIR = process.env.BENCH_CPU_PROF;
const MEM_DIR = process.env.BENCH_MEM_PROF;
const VIRSH = "/usr/bin/virsh";
const SERVER_CWD = process.env.BENCH_PACKAGE_ROOT ?? PACKAGE_ROOT;

const lab: LabInfo = loadLab();
const URI = lab.libvirtUri;

// ---- small helpers ------------------------------------------------------------

const now = () => performance.now();
function median(xs: number[]): number {
    if (!xs.length) return NaN;
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const r2 = (x: number) => Math.round(x * 100) / 100;
const r1 = (x: number) => Math.round(x * 10) / 10;
const ms = (x: number) => `${x.toFixed(1)} ms`;

/** Run fn over items with at most n in flight (the engine's parallelism). */
async function pool<T, R>(n: number, items: readonly T[], fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
    const out = new Array<R>(items.length);
    let next = 0;
    const worker = async () => { while (next < items.length) { const i = next++; out[i] = await fn(items[i]!, i); } };
    await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
    return out;
}

function log(...a: unknown[]): void { console.error("bench:", ...a); }

async function virshLocalOk(args: readonly string[]): Promise<string> {
    const r = await run(VIRSH, ["-c", URI, ...args], { timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`virsh ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
}

/** POSIX single quoting for the fresh-ssh baseline's command string. */
function q(a: string): string { return /^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`; }

// ---- a private sshd with the lab's configuration --------------------------------

interface BenchSshd { port: number; pid: number; log: string; knownHosts: string; dir: string; stop(): Promise<void>; }

function freePort(): Promise<number> {
    return new Promise((res, rej) => {
        const s = net.createServer();
        s.once("error", rej);
        s.listen(0, "127.0.0.1", () => { const p = (s.address() as net.AddressInfo).port; s.close(() => res(p)); });
    });
}

function canConnect(port: number): Promise<boolean> {
    return new Promise((res) => {
        const c = net.connect(port, "127.0.0.1");
        c.once("connect", () => { c.destroy(); res(true); });
        c.once("error", () => res(false));
    });
}

async function startSshd(): Promise<BenchSshd> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-sshd-"));
    const port = await freePort();
    const base = fs.readFileSync(path.join(lab.labDir, "sshd_config"), "utf8");
    if (!/^Port \d+$/m.test(base) || !/^PidFile /m.test(base)) throw new Error("unexpected lab sshd_config: no Port or PidFile line");
    const cfg = path.join(dir, "sshd_config");
    fs.writeFileSync(cfg, base.replace(/^Port \d+$/m, `Port ${port}`).replace(/^PidFile .*$/m, `PidFile "${dir}/sshd.pid"`));
    const logFile = path.join(dir, "sshd.log");
    fs.writeFileSync(logFile, "");
    const knownHosts = path.join(dir, "known_hosts");
    fs.writeFileSync(knownHosts, `[127.0.0.1]:${port} ${lab.hostKey}\n`);
    const proc = childProcess.spawn("/usr/sbin/sshd", ["-D", "-f", cfg, "-E", logFile], { stdio: "ignore" });
    let exited = false;
    const gone = new Promise<void>((r) => proc.once("exit", () => { exited = true; r(); }));
    const stop = async () => {
        if (!exited) { proc.kill("SIGTERM"); await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]); }
        if (!exited) { proc.kill("SIGKILL"); await gone; }
        fs.rmSync(dir, { recursive: true, force: true });
    };
    for (let i = 0; i < 100; i++) {
        if (exited) break;
        if (await canConnect(port)) return { port, pid: proc.pid!, log: logFile, knownHosts, dir, stop };
        await new Promise((r) => setTimeout(r, 50));
    }
    const text = fs.readFileSync(logFile, "utf8");
    await stop();
    throw new Error(`the benchmark's sshd did not start on 127.0.0.1:${port}: ${text.trim()}`);
}

// ---- CPU accounting (/proc, clock ticks of 10 ms) ---------------------------------------

/** utime+stime of a process, plus cutime+cstime (its children that have exited), in ms. */
function cpuMs(pid: number, withChildren = true): number {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
        // fields 14-17 of stat: utime stime cutime cstime; after the comm they are at 11..14
        return ((f[11]! + f[12]!) + (withChildren ? f[13]! + f[14]! : 0)) * 10;
    } catch { return 0; }
}

/** CPU of a process and all its live descendants (each with its exited children), in ms. */
function treeCpuMs(root: number): number {
    const parent = new Map<number, number>();
    for (const e of fs.readdirSync("/proc")) {
        if (!/^\d+$/.test(e)) continue;
        try {
            const stat = fs.readFileSync(`/proc/${e}/stat`, "utf8");
            parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
        } catch { /* gone */ }
    }
    let total = 0;
    for (const pid of parent.keys()) {
        for (let p: number | undefined = pid; p !== undefined && p > 1; p = parent.get(p)) {
            if (p === root) { total += cpuMs(pid); break; }
        }
    }
    return total;
}

function pidOfFile(file: string): number | undefined {
    try { return Number(fs.readFileSync(file, "utf8").trim()) || undefined; } catch { return undefined; }
}

/** CPU (ms) spent by libvirtd and the given domains' qemu processes. */
function hostCpu(domains: readonly string[]): { libvirtd: number; qemu: number } {
    const lv = pidOfFile(path.join(lab.labDir, "libvirtd.pid"));
    return {
        libvirtd: lv ? cpuMs(lv, false) : 0,
        qemu: sum(domains.map((d) => { const p = pidOfFile(`/run/libvirt/qemu/${d}.pid`); return p ? cpuMs(p, false) : 0; })),
    };
}

/** Counts of sshd log events since a mark. */
class SshdLog {
    constructor(private readonly file: string) {}
    mark(): number { return fs.statSync(this.file).size; }
    since(mark: number): { handshakes: number; commands: number } {
        const fd = fs.openSync(this.file, "r");
        try {
            const size = fs.fstatSync(fd).size;
            const buf = Buffer.alloc(Math.max(0, size - mark));
            fs.readSync(fd, buf, 0, buf.length, mark);
            const text = buf.toString("utf8");
            return {
                handshakes: (text.match(/^Accepted publickey for /gm) ?? []).length,
                commands: (text.match(/^Starting session: command /gm) ?? []).length,
            };
        } finally { fs.closeSync(fd); }
    }
}

// ---- the three ways of running virsh ---------------------------------------------

interface Trio { create: number; read: number; del: number; total: number; }

/** Baseline A: the same virsh commands, run locally with execFile. */
async function localTrio(domainUuid: string, name: string): Promise<Trio> {
    const t0 = now();
    await virshLocalOk(["snapshot-create-as", "--domain", domainUuid, "--name", name, "--atomic"]);
    const t1 = now();
    await virshLocalOk(["snapshot-dumpxml", "--domain", domainUuid, "--snapshotname", name]);
    const t2 = now();
    await virshLocalOk(["snapshot-delete", "--domain", domainUuid, "--snapshotname", name]);
    const t3 = now();
    return { create: t1 - t0, read: t2 - t1, del: t3 - t2, total: t3 - t0 };
}

function sshArgv(sshd: BenchSshd): string[] {
    return ["-F", "/dev/null", "-p", String(sshd.port), "-i", lab.privateKeyPath, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", `UserKnownHostsFile=${sshd.knownHosts}`, "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", `root@${lab.host}`];
}

async function sshVirsh(sshd: BenchSshd, args: readonly string[]): Promise<void> {
    const line = ["env", "LC_ALL=C", "virsh", "-c", URI, ...args].map(q).join(" ");
    const r = await run("/usr/bin/ssh", [...sshArgv(sshd), "--", line], { timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`ssh virsh ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
}

/** Baseline B: the same commands through a fresh ssh process each (a local-exec / @pulumi/command user). */
async function sshTrio(sshd: BenchSshd, domainUuid: string, name: string): Promise<Trio> {
    const t0 = now();
    await sshVirsh(sshd, ["snapshot-create-as", "--domain", domainUuid, "--name", name, "--atomic"]);
    const t1 = now();
    await sshVirsh(sshd, ["snapshot-dumpxml", "--domain", domainUuid, "--snapshotname", name]);
    const t2 = now();
    await sshVirsh(sshd, ["snapshot-delete", "--domain", domainUuid, "--snapshotname", name]);
    const t3 = now();
    return { create: t1 - t0, read: t2 - t1, del: t3 - t2, total: t3 - t0 };
}

class Provider {
    private constructor(readonly engine: EngineHarness, readonly connection: Props, readonly label: string) {}

    static async start(sshd: BenchSshd, label: string): Promise<Provider> {
        const env: Record<string, string> = {};
        if (process.env.BENCH_SERVER_NODE_OPTIONS) env.NODE_OPTIONS = process.env.BENCH_SERVER_NODE_OPTIONS;
        if (PROF_DIR) {
            // Node 20 refuses --cpu-prof in NODE_OPTIONS: a preload starts the profiler instead.
            env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ""} --require ${path.join(__dirname, "cpuprof.js")}`.trim();
            env.BENCH_CPU_PROF = path.resolve(PROF_DIR);
        }
        if (MEM_DIR) {
            env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ""} --require ${path.join(__dirname, "memprof.js")}`.trim();
            env.BENCH_MEM_PROF = path.resolve(MEM_DIR);
            for (const k of ["BENCH_MEM_ALLOC", "BENCH_MEM_TRACE_GC"]) if (process.env[k]) env[k] = process.env[k]!;
        }
        env.BENCH_PROFILE_LABEL = label;
        const engine = await EngineHarness.start({ cwd: SERVER_CWD, env, callTimeoutMs: 300_000 });
        const connection = { host: lab.host, port: sshd.port, user: "root", privateKey: fs.readFileSync(lab.privateKeyPath, "utf8"), hostKey: lab.hostKey };
        return new Provider(engine, connection, label);
    }

    /** Check, as the engine does before a create; returns the checked inputs. */
    async check(domain: string, snapshotName: string): Promise<{ urn: string; inputs: Props }> {
        const urn = this.engine.urn(TYPE, snapshotName);
        const news = await this.engine.programInputs(DomainSnapshotProvider, { connection: this.connection, domain, snapshotName });
        const r = await this.engine.check(urn, {}, news);
        if (r.failures.length) throw new Error(`check failed: ${JSON.stringify(r.failures)}`);
        return { urn, inputs: r.inputs };
    }

    async create(urn: string, inputs: Props): Promise<State> {
        const c = await this.engine.create(urn, inputs);
        if (!c.id) throw new Error(`create of ${urn} returned no id`);
        return { urn, id: c.id, inputs, outs: c.outs };
    }

    async read(s: State): Promise<State> {
        const r = await this.engine.read(s.urn, s.id, s.outs, { inputs: s.inputs });
        if (r.id !== s.id) throw new Error(`read of ${s.id} returned id '${r.id}'`);
        return { ...s, outs: r.props };
    }

    async delete(s: State): Promise<void> {
        await this.engine.delete(s.urn, s.id, s.outs, { oldInputs: s.inputs });
    }

    async trio(domain: string, name: string): Promise<Trio & { check: number }> {
        const t0 = now();
        const { urn, inputs } = await this.check(domain, name);
        const t1 = now();
        const s = await this.create(urn, inputs);
        const t2 = now();
        await this.read(s);
        const t3 = now();
        await this.delete(s);
        const t4 = now();
        return { check: t1 - t0, create: t2 - t1, read: t3 - t2, del: t4 - t3, total: t4 - t1 };
    }

    async close(): Promise<void> {
        await this.engine.close();
        const dir = process.env.BENCH_SERVER_LOG_DIR;
        if (dir) { fs.mkdirSync(dir, { recursive: true }); fs.writeFileSync(path.join(dir, `${this.label}-${this.engine.pid}.log`), this.engine.logs()); }
    }

    status(): Record<string, number> {
        const text = fs.readFileSync(`/proc/${this.engine.pid}/status`, "utf8");
        const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, "m").exec(text)?.[1] ?? NaN);
        return { rssKb: kb("VmRSS"), hwmKb: kb("VmHWM") };
    }
}

interface State { urn: string; id: string; inputs: Props; outs: Props; }

// ---- cleanup ------------------------------------------------------------------------

const cleanups: Array<() => Promise<unknown>> = [];
async function cleanupAll(): Promise<void> {
    while (cleanups.length) {
        const f = cleanups.pop()!;
        try { await f(); } catch (e) { log(`cleanup: ${(e as Error).message}`); }
    }
}
let interrupted = false;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
        if (interrupted) return;
        interrupted = true;
        log(`${sig}: cleaning up`);
        void cleanupAll().finally(() => process.exit(130));
    });
}

async function newDomain(prefix: string): Promise<TestDomain> {
    const d = await makeDomain({ prefix, running: true });
    cleanups.push(() => d.dispose());
    return d;
}

/** Existing snapshots on a domain, made locally with one virsh process per batch (fast; not measured). */
async function fillSnapshots(dom: TestDomain, from: number, to: number): Promise<void> {
    for (let i = from; i < to; i += 25) {
        const cmds: string[] = [];
        for (let j = i; j < Math.min(to, i + 25); j++) cmds.push(`snapshot-create-as --domain ${dom.uuid} --name fill-${String(j).padStart(4, "0")} --atomic`);
        await virshLocalOk([cmds.join(" ; ")]);
    }
    const n = (await virshLocalOk(["snapshot-list", "--domain", dom.uuid, "--name"])).split("\n").filter(Boolean).length;
    if (n !== to) throw new Error(`domain ${dom.name} has ${n} snapshots, expected ${to}`);
}

// ---- the phases ----------------------------------------------------------------------------

const results: Record<string, unknown> = {};
const table: string[] = [];
function row(label: string, ...cols: string[]): void { table.push(`${label.padEnd(44)} ${cols.map((c) => c.padStart(12)).join(" ")}`); }

async function perOperation(sshd: BenchSshd, sshdLog: SshdLog): Promise<void> {
    log(`per-operation: ${WARMUP} warm-up + ${ITER} iterations, interleaved`);
    const dom = await newDomain("labtmp-bench-op-");
    const provider = await Provider.start(sshd, "perop");
    cleanups.push(() => provider.close());
    const L: Trio[] = [], S: Trio[] = [], P: Array<Trio & { check: number }> = [];
    const cmdsPerTrio: number[] = [], checkCmds: number[] = [];
    for (let i = 0; i < WARMUP + ITER; i++) {
        const order = [0, 1, 2].map((k) => (k + i) % 3);
        for (const which of order) {
            const name = `bench-${i}-${which}`;
            if (which === 0) { const t = await localTrio(dom.uuid, name); if (i >= WARMUP) L.push(t); }
            if (which === 1) { const t = await sshTrio(sshd, dom.uuid, name); if (i >= WARMUP) S.push(t); }
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
    for (let i = 0; i < 10; i++) { const t0 = now(); await provider.check(dom.name, `bench-check-${i}`); checks.push(now() - t0); }
    const med = (xs: Trio[], k: keyof Trio) => median(xs.map((x) => x[k]));
    const local = med(L, "total"), ssh = med(S, "total"), prov = med(P, "total");
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
        perOpRatio: r2(prov / local), sshPerOpRatio: r2(ssh / local), providerVsFreshSsh: r2(prov / ssh),
        perOpLocalMs: r1(local), perOpFreshSshMs: r1(ssh), perOpProviderMs: r1(prov),
        perOpProviderCreateMs: r1(med(P, "create")), perOpProviderReadMs: r1(med(P, "read")), perOpProviderDeleteMs: r1(med(P, "del")),
        perOpLocalCreateMs: r1(med(L, "create")), perOpLocalReadMs: r1(med(L, "read")), perOpLocalDeleteMs: r1(med(L, "del")),
        checkMs: r1(median(checks)), virshProcessesPerOp: median(cmdsPerTrio), virshProcessesPerCheck: median(checkCmds),
    });
    await provider.close();
}

async function fanoutAndRefresh(sshd: BenchSshd, sshdLog: SshdLog): Promise<void> {
    log(`fan-out: ${FANOUT_SNAPSHOTS} snapshots over ${FANOUT_DOMAINS} fresh running domains, ${PARALLEL} in flight`);
    const doms = await Promise.all(Array.from({ length: FANOUT_DOMAINS }, () => newDomain("labtmp-bench-fan-")));
    const per = FANOUT_SNAPSHOTS / FANOUT_DOMAINS;
    // Round-robin over domains, as a program declaring "one snapshot per VM" ten times would.
    const jobs = Array.from({ length: FANOUT_SNAPSHOTS }, (_, i) => ({ dom: doms[i % FANOUT_DOMAINS]!, name: `fan-${Math.floor(i / FANOUT_DOMAINS)}` }));

    const deleteLocally = async () => { for (const j of jobs) await virshLocalOk(["snapshot-delete", "--domain", j.dom.uuid, "--snapshotname", j.name]); };
    // Warm-up: the first snapshots of a fresh disk are several times slower (the qcow2 file grows
    // for the saved memory; later ones reuse the freed clusters), so every round starts warm.
    await timedLocalFanout(jobs);
    await deleteLocally();

    // Rounds, each side by side: the ideal, local virsh with the same parallelism, then the
    // provider in a fresh process (each `pulumi up` is one). Ratios are taken within a round.
    interface Round {
        ideal: number; localParallel: number; wall: number; checkWall: number; handshakes: number; checkCommands: number; createCommands: number; peakKb: number; startKb: number;
        localCpu: { client: number; libvirtd: number; qemu: number }; providerCpu: { server: number; sshdAndVirsh: number; libvirtd: number; qemu: number };
    }
    const rounds: Round[] = [];
    let provider: Provider | undefined;
    let states: State[] = [];
    for (let round = 0; round < FANOUT_ROUNDS; round++) {
        if (provider) {
            await pool(PARALLEL, states, (s) => provider!.delete(s));
            await provider.close();
        }
        // The ideal: each domain's creates one after another, domains in perfect parallel.
        const localTimes = new Map<string, number>();
        for (const j of jobs) {
            const t0 = now();
            await virshLocalOk(["snapshot-create-as", "--domain", j.dom.uuid, "--name", j.name, "--atomic"]);
            localTimes.set(j.dom.uuid, (localTimes.get(j.dom.uuid) ?? 0) + now() - t0);
        }
        await deleteLocally();
        const ideal = Math.max(...localTimes.values());
        // What local virsh itself achieves with the same parallelism (one at a time per domain).
        const c0 = cpuMs(process.pid), h0 = hostCpu(doms.map((d) => d.name));
        const localParallel = await timedLocalFanout(jobs);
        const h1 = hostCpu(doms.map((d) => d.name));
        const localCpu = { client: cpuMs(process.pid) - c0, libvirtd: h1.libvirtd - h0.libvirtd, qemu: h1.qemu - h0.qemu };
        await deleteLocally();

        const p = provider = await Provider.start(sshd, `fanout${round}`);
        cleanups.push(() => p.close());
        const startKb = p.status().rssKb;
        let peakKb = startKb;
        const sampler = setInterval(() => { try { peakKb = Math.max(peakKb, p.status().rssKb); } catch { /* exited */ } }, 10);
        const m0 = sshdLog.mark();
        const tc0 = now();
        const checked = await pool(PARALLEL, jobs, (j) => p.check(j.dom.name, j.name));
        const checkWall = now() - tc0;
        const m1 = sshdLog.mark();
        const s0 = cpuMs(p.engine.pid), d0 = treeCpuMs(sshd.pid), h2 = hostCpu(doms.map((d) => d.name));
        const t0 = now();
        states = await pool(PARALLEL, checked, (c) => p.create(c.urn, c.inputs));
        const wall = now() - t0;
        if (MEM_DIR) {
            fs.mkdirSync(MEM_DIR, { recursive: true });
            const marks = { checksStart: Date.now() - (now() - tc0), checksEnd: Date.now() - (now() - tc0 - checkWall), createsEnd: Date.now() };
            fs.writeFileSync(path.join(MEM_DIR, `${p.label}-${p.engine.pid}.marks.json`), JSON.stringify(marks));
        }
        const h3 = hostCpu(doms.map((d) => d.name));
        const providerCpu = { server: cpuMs(p.engine.pid) - s0, sshdAndVirsh: treeCpuMs(sshd.pid) - d0, libvirtd: h3.libvirtd - h2.libvirtd, qemu: h3.qemu - h2.qemu };
        const afterCreate = sshdLog.since(m1), all = sshdLog.since(m0);
        clearInterval(sampler);
        peakKb = Math.max(peakKb, p.status().rssKb, p.status().hwmKb);
        for (const d of doms) {
            const n = (await virshLocalOk(["snapshot-list", "--domain", d.uuid, "--name"])).split("\n").filter(Boolean).length;
            if (n !== per) throw new Error(`fan-out left ${n} snapshots on ${d.name}, expected ${per}`);
        }
        rounds.push({ ideal, localParallel, wall, checkWall, handshakes: all.handshakes, checkCommands: all.commands - afterCreate.commands, createCommands: afterCreate.commands, peakKb, startKb, localCpu, providerCpu });
        log(`  round ${round + 1}: ideal ${ms(ideal)}, local || ${ms(localParallel)}, provider ${ms(wall)} (${r2(wall / ideal)}x)`);
    }
    const medOf = (f: (r: Round) => number) => median(rounds.map(f));
    const ratio = medOf((r) => r.wall / r.ideal), localRatio = medOf((r) => r.localParallel / r.ideal);
    const peakKb = Math.max(...rounds.map((r) => r.peakKb));
    const handshakes = Math.max(...rounds.map((r) => r.handshakes));
    row(`fan-out (50 creates, 5 domains, 10 in flight; median of ${rounds.length} rounds)`, "ideal", "local ||", "provider");
    row("  wall time of the creates", ms(medOf((r) => r.ideal)), ms(medOf((r) => r.localParallel)), ms(medOf((r) => r.wall)));
    row("  ratio to ideal (within each round)", "1.00", r2(localRatio).toFixed(2), r2(ratio).toFixed(2));
    row("  provider / local || (within each round)", "", "", r2(medOf((r) => r.wall / r.localParallel)).toFixed(2));
    row("  checks before the creates (wall)", "", "", ms(medOf((r) => r.checkWall)));
    row("  SSH handshakes per process (max)", "", "", String(handshakes));
    row("  virsh processes on the host (check / create)", "", "", `${medOf((r) => r.checkCommands)} / ${medOf((r) => r.createCommands)}`);
    row("  provider RSS: at start / peak (VmHWM, max)", "", `${r1(medOf((r) => r.startKb) / 1024)} MB`, `${r1(peakKb / 1024)} MB`);
    const per50 = (x: number) => `${(x / jobs.length).toFixed(1)} ms`;
    row("  CPU per create: virsh processes (local) / provider server", "", per50(medOf((r) => r.localCpu.client)), per50(medOf((r) => r.providerCpu.server)));
    row("  CPU per create: sshd + virsh on the host", "", "", per50(medOf((r) => r.providerCpu.sshdAndVirsh)));
    row("  CPU per create: libvirtd", "", per50(medOf((r) => r.localCpu.libvirtd)), per50(medOf((r) => r.providerCpu.libvirtd)));
    row("  CPU per create: qemu", "", per50(medOf((r) => r.localCpu.qemu)), per50(medOf((r) => r.providerCpu.qemu)));
    const floor = await serverFloor(sshd, jobs.length);
    row("  same RPCs to a no-op provider: peak RSS", "", "", `${r1(floor / 1024)} MB`);
    Object.assign(results, {
        fanoutRatio: r2(ratio), fanoutMs: r1(medOf((r) => r.wall)), fanoutIdealMs: r1(medOf((r) => r.ideal)), fanoutLocalParallelMs: r1(medOf((r) => r.localParallel)),
        localFanoutRatio: r2(localRatio), fanoutRounds: rounds.map((r) => r2(r.wall / r.ideal)), fanoutCheckMs: r1(medOf((r) => r.checkWall)),
        fanoutVsLocalParallel: r2(medOf((r) => r.wall / r.localParallel)),
        fanoutCpuPerCreateMs: {
            local: { virsh: r1(medOf((r) => r.localCpu.client) / jobs.length), libvirtd: r1(medOf((r) => r.localCpu.libvirtd) / jobs.length), qemu: r1(medOf((r) => r.localCpu.qemu) / jobs.length) },
            provider: { server: r1(medOf((r) => r.providerCpu.server) / jobs.length), sshdAndVirsh: r1(medOf((r) => r.providerCpu.sshdAndVirsh) / jobs.length),
                libvirtd: r1(medOf((r) => r.providerCpu.libvirtd) / jobs.length), qemu: r1(medOf((r) => r.providerCpu.qemu) / jobs.length) },
        },
        handshakesPerHost: handshakes, fanoutVirshProcesses: medOf((r) => r.createCommands),
        peakRssMB: r1(peakKb / 1024), startRssMB: r1(medOf((r) => r.startKb) / 1024), noopProviderPeakRssMB: r1(floor / 1024),
    });
    const last = provider!;

    // Refresh: another 50 so that 100 exist, then a fresh process (a new `pulumi refresh`) reads them all.
    const more = Array.from({ length: REFRESH_COUNT - FANOUT_SNAPSHOTS }, (_, i) => ({ dom: doms[i % FANOUT_DOMAINS]!, name: `ref-${Math.floor(i / FANOUT_DOMAINS)}` }));
    const moreStates = await pool(PARALLEL, more, async (j) => { const c = await last.check(j.dom.name, j.name); return last.create(c.urn, c.inputs); });
    await last.close();
    const everything = [...states, ...moreStates];

    log(`refresh: ${everything.length} reads on a fresh provider process, ${PARALLEL} in flight`);
    const refresher = await Provider.start(sshd, "refresh");
    cleanups.push(() => refresher.close());
    const rm = sshdLog.mark();
    const r0 = now();
    await pool(PARALLEL, everything, (s) => refresher.read(s));
    const refreshMs = now() - r0;
    const rc = sshdLog.since(rm);
    // For scale: the same reads with local virsh (snapshot-dumpxml), same parallelism.
    const l0 = now();
    await pool(PARALLEL, everything, (s) => virshLocalOk(["snapshot-dumpxml", "--domain", String(s.outs.domainUuid), "--snapshotname", String(s.outs.snapshotName)]));
    const localRefreshMs = now() - l0;
    const d0 = now();
    await pool(PARALLEL, everything, (s) => refresher.delete(s));
    const deleteMs = now() - d0;
    const refreshRss = refresher.status();
    await refresher.close();
    for (const d of doms) {
        const left = (await virshLocalOk(["snapshot-list", "--domain", d.uuid, "--name"])).split("\n").filter(Boolean);
        if (left.length) throw new Error(`delete left ${left.length} snapshots on ${d.name}`);
    }
    row(`refresh (${everything.length} reads, fresh process, 10 in flight)`, "", "local ||", "provider");
    row("  wall time", "", ms(localRefreshMs), ms(refreshMs));
    row("  virsh processes started on the host", "", String(everything.length), String(rc.commands));
    row("  SSH handshakes", "", "", String(rc.handshakes));
    row(`  then delete all ${everything.length} (wall)`, "", "", ms(deleteMs));
    Object.assign(results, {
        refreshMs: r1(refreshMs), refreshLocalMs: r1(localRefreshMs), refreshVirshProcesses: rc.commands, refreshHandshakes: rc.handshakes,
        deleteAllMs: r1(deleteMs), refreshPeakRssMB: r1(refreshRss.hwmKb / 1024),
    });
}

/**
 * The dynamic-provider server's own share of the memory: the same Check and
 * Create calls, 10 in flight, with inputs of the same size, to a provider that
 * does nothing (test/fixtures' bareProvider). Returns its VmHWM in kB.
 */
async function serverFloor(sshd: BenchSshd, n: number): Promise<number> {
    const p = await Provider.start(sshd, "noop");
    cleanups.push(() => p.close());
    try {
        await pool(PARALLEL, Array.from({ length: n }, (_, i) => i), async (i) => {
            const urn = p.engine.urn(TYPE, `noop-${i}`);
            const inputs = await p.engine.programInputs(bareProvider, { connection: p.connection, domain: "d", snapshotName: `noop-${i}` });
            const c = await p.engine.check(urn, {}, inputs);
            await p.engine.create(urn, c.inputs);
        });
        return p.status().hwmKb;
    } finally {
        await p.close();
    }
}

async function timedLocalFanout(jobs: Array<{ dom: TestDomain; name: string }>): Promise<number> {
    const tails = new Map<string, Promise<unknown>>();
    const t0 = now();
    await pool(PARALLEL, jobs, (j) => {
        const prev = tails.get(j.dom.uuid) ?? Promise.resolve();
        const p = prev.then(() => virshLocalOk(["snapshot-create-as", "--domain", j.dom.uuid, "--name", j.name, "--atomic"]));
        tails.set(j.dom.uuid, p);
        return p;
    });
    return now() - t0;
}

async function scale(sshd: BenchSshd): Promise<void> {
    log(`scale: per-operation time with ${SCALE_COUNTS.join(", ")} existing snapshots (one domain each, interleaved), ${SCALE_ITER} iterations`);
    // One domain per count, measured in turn, so that every count sees the same load on this shared machine.
    const doms = await Promise.all(SCALE_COUNTS.map(() => newDomain("labtmp-bench-scale-")));
    const provider = await Provider.start(sshd, "scale");
    cleanups.push(() => provider.close());
    await Promise.all(doms.map(async (d, k) => {
        // Warm the disk (its first snapshots grow the qcow2 file), then fill it.
        for (let i = 0; i < 2; i++) await localTrio(d.uuid, `warm-${i}`);
        await fillSnapshots(d, 0, SCALE_COUNTS[k]!);
    }));
    for (let i = 0; i < WARMUP; i++) await provider.trio(doms[0]!.name, `warm-p-${i}`);
    const L: number[][] = SCALE_COUNTS.map(() => []), P: number[][] = SCALE_COUNTS.map(() => []);
    for (let i = 0; i < SCALE_ITER; i++) {
        for (let j = 0; j < SCALE_COUNTS.length; j++) {
            const k = (i + j) % SCALE_COUNTS.length, d = doms[k]!, name = `scale-${i}`;
            if ((i + j) % 2) { L[k]!.push((await localTrio(d.uuid, name)).total); P[k]!.push((await provider.trio(d.name, name)).total); }
            else { P[k]!.push((await provider.trio(d.name, name)).total); L[k]!.push((await localTrio(d.uuid, name)).total); }
        }
    }
    await provider.close();
    const perCount = SCALE_COUNTS.map((_, k) => ({ local: median(L[k]!), provider: median(P[k]!) }));
    const first = perCount[0]!, last = perCount[perCount.length - 1]!;
    row(`scale (create+read+delete, median of ${SCALE_ITER})`, "existing", "local virsh", "provider");
    SCALE_COUNTS.forEach((n, k) => row("", String(n), ms(perCount[k]!.local), ms(perCount[k]!.provider)));
    row(`  growth ${SCALE_COUNTS[SCALE_COUNTS.length - 1]}/${SCALE_COUNTS[0]}`, "", r2(last.local / first.local).toFixed(2), r2(last.provider / first.provider).toFixed(2));
    row(`  growth ${SCALE_COUNTS[SCALE_COUNTS.length - 1]} - ${SCALE_COUNTS[0]}`, "", `+${ms(last.local - first.local)}`, `+${ms(last.provider - first.provider)}`);
    Object.assign(results, {
        scaleRatio200: r2(last.provider / first.provider), localScaleRatio200: r2(last.local / first.local),
        scaleGrowth200Ms: { local: r1(last.local - first.local), provider: r1(last.provider - first.provider) },
        scaleMs: Object.fromEntries(SCALE_COUNTS.map((n, k) => [n, { local: r1(perCount[k]!.local), provider: r1(perCount[k]!.provider) }])),
    });
}

async function machine(): Promise<Record<string, unknown>> {
    const virshVersion = await virshLocalOk(["version"]);
    return {
        nproc: os.cpus().length, memMB: Math.round(os.totalmem() / 2 ** 20), virtType: lab.virtType,
        libvirt: /Running against daemon: ([\d.]+)/.exec(virshVersion)?.[1] ?? lab.libvirtVersion,
        qemu: /Running hypervisor: QEMU ([\d.]+)/.exec(virshVersion)?.[1] ?? lab.qemuVersion,
        node: process.version, loadavg: os.loadavg().map(r2),
    };
}

async function main(): Promise<void> {
    const started = now();
    const m = await machine();
    log(`machine: ${JSON.stringify(m)}`);
    // The server loads the provider text with require-from-string, which resolves from its cwd.
    log(`provider from ${createRequire(path.join(SERVER_CWD, "__bench__.js")).resolve("pulumi-libvirt-snapshots/impl")}`);
    const sshd = await startSshd();
    cleanups.push(() => sshd.stop());
    const sshdLog = new SshdLog(sshd.log);
    log(`private sshd on 127.0.0.1:${sshd.port} (lab config), log ${sshd.log}`);
    try {
        if (!SKIP.has("perop")) await perOperation(sshd, sshdLog);
        if (!SKIP.has("fanout")) await fanoutAndRefresh(sshd, sshdLog);
        if (!SKIP.has("scale")) await scale(sshd);
    } finally {
        await cleanupAll();
    }
    Object.assign(results, { machine: { ...m, loadavgEnd: os.loadavg().map(r2) }, runtimeS: r1((now() - started) / 1000) });
    console.log(table.join("\n"));
    const targets: Array<[string, string, (v: number) => boolean]> = [
        ["perOpRatio", "<= 1.25", (v) => v <= 1.25],
        ["fanoutRatio", "<= 1.3", (v) => v <= 1.3],
        ["handshakesPerHost", "== 1", (v) => v === 1],
        ["peakRssMB", "< 150", (v) => v < 150],
        ["scaleRatio200", "<= 1.5", (v) => v <= 1.5],
    ];
    console.log(`targets: ${targets.map(([k, t, ok]) => `${k} ${t} ${typeof results[k] !== "number" ? "not measured" : ok(results[k] as number) ? "met" : "MISSED"}`).join("; ")}`);
    console.log(JSON.stringify(results));
}

main().catch(async (e) => {
    console.error(`bench failed: ${(e as Error).stack ?? e}`);
    await cleanupAll();
    process.exit(1);
});
