// Preloaded into the provider server with NODE_OPTIONS=--require when
// BENCH_MEM_PROF=DIR is set (provider-server.ts adds it): what the server's memory is
// made of, measured from inside, without changing it (no forced GC, no flags).
//   - process.memoryUsage() every 10 ms (rss, heapTotal, heapUsed, external,
//     arrayBuffers), and V8's heap spaces at the highest RSS seen;
//   - RSS and heap before and after each first require() of the provider's
//     implementation and of zod, ssh2, fast-xml-parser (nested loads counted
//     in their parent);
//   - with BENCH_MEM_ALLOC=1, V8's sampling heap profiler with objects that
//     minor and major GCs collected included, i.e. every allocation by stack,
//     garbage too (a .heapprofile for Chrome DevTools, plus a summary);
//   - with BENCH_MEM_TRACE_GC=1, --trace-gc lines in the server's output
//     (BENCH_SERVER_LOG_DIR), from the port line on.
// Written to DIR/<label>-<pid>.mem.json on SIGTERM (how the harness stops the server).
import * as fs from "node:fs";
import * as inspector from "node:inspector";
import * as path from "node:path";
import * as v8 from "node:v8";

const dir = process.env.BENCH_MEM_PROF;
if (dir) {
    const t0 = performance.now();
    const startEpochMs = Date.now(); // phases/fanout.ts writes its marks (<label>-<pid>.marks.json) in epoch ms
    const mb = (x: number) => Math.round((x / 2 ** 20) * 10) / 10;
    const snap = () => {
        const m = process.memoryUsage();
        return {
            t: Math.round(performance.now() - t0),
            rss: mb(m.rss),
            heapTotal: mb(m.heapTotal),
            heapUsed: mb(m.heapUsed),
            external: mb(m.external),
            arrayBuffers: mb(m.arrayBuffers),
        };
    };
    type Sample = ReturnType<typeof snap>;
    const timeline: Sample[] = [];
    let peak: Sample = snap();
    let peakSpaces: Record<string, number> = {};
    const spaces = () => Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, mb(s.space_size)]));
    const timer = setInterval(() => {
        const s = snap();
        timeline.push(s);
        if (s.rss > peak.rss) {
            peak = s;
            peakSpaces = spaces();
        }
    }, 10);
    timer.unref();

    // First loads of the modules that matter, measured around require().
    const loads: Array<{ module: string; t: number; before: Sample; after: Sample }> = [];
    // impl.ts loads a resource's module on its first call (./resources/<name>), not with itself.
    const watched = new Set([
        "pulumi-libvirt-snapshots/impl",
        "./resources/domainSnapshot",
        "./resources/domainCheckpoint",
        "zod",
        "ssh2",
        "fast-xml-parser",
    ]);
    const Module = require("node:module") as { prototype: { require(id: string): unknown } };
    const orig = Module.prototype.require;
    Module.prototype.require = function (this: unknown, id: string) {
        if (!watched.has(id)) return orig.call(this, id);
        watched.delete(id);
        const before = snap();
        const r = orig.call(this, id);
        loads.push({ module: id, t: before.t, before, after: snap() });
        return r;
    };

    // --trace-gc is refused in NODE_OPTIONS, and its lines must not come before the port line the
    // harness reads from stdout: turn it on (it only prints) once the server has written that line.
    if (process.env.BENCH_MEM_TRACE_GC === "1") {
        const write = process.stdout.write;
        process.stdout.write = function (this: unknown, ...a: unknown[]) {
            const r = (write as (...x: unknown[]) => boolean).apply(process.stdout, a);
            if (String(a[0]).includes("\n")) {
                process.stdout.write = write;
                v8.setFlagsFromString("--trace-gc");
            }
            return r;
        } as typeof process.stdout.write;
    }

    let session: inspector.Session | undefined;
    if (process.env.BENCH_MEM_ALLOC === "1") {
        session = new inspector.Session();
        session.connect();
        session.post("HeapProfiler.enable", () =>
            session!.post("HeapProfiler.startSampling", {
                samplingInterval: 4096,
                includeObjectsCollectedByMajorGC: true,
                includeObjectsCollectedByMinorGC: true,
            } as object),
        );
    }

    const label = `${process.env.BENCH_PROFILE_LABEL ?? "server"}-${process.pid}`;
    const write = (extra: Record<string, unknown>) => {
        fs.mkdirSync(dir, { recursive: true });
        const last = snap();
        fs.writeFileSync(
            path.join(dir, `${label}.mem.json`),
            JSON.stringify({
                startEpochMs,
                peak,
                peakSpaces,
                last,
                spaces: spaces(),
                smaps: smaps(),
                heap: v8.getHeapStatistics(),
                loads,
                modules: modulesLoaded(),
                ...extra,
                timeline,
            }),
        );
    };
    // At exit, after everything above was recorded: how much of each space was live, i.e. what a full
    // GC (which never ran during the measured RPCs) would have left. Analysis only, after the fact.
    const used = () => Object.fromEntries(v8.getHeapSpaceStatistics().map((x) => [x.space_name, mb(x.space_used_size)]));
    const liveAtExit = (then: (r: Record<string, unknown>) => void) => {
        const before = used();
        const s2 = new inspector.Session();
        s2.connect();
        s2.post("HeapProfiler.collectGarbage", () => {
            then({ usedBeforeFullGc: before, usedAfterFullGc: used() });
        });
    };
    process.once("SIGTERM", () => {
        clearInterval(timer);
        const finish = (extra: Record<string, unknown>) =>
            liveAtExit((live) => {
                write({ ...extra, ...live });
                if (process.listenerCount("SIGTERM") === 0) process.exit(0);
            });
        if (!session) return finish({});
        session.post("HeapProfiler.stopSampling", (err, res) => {
            let summary: unknown;
            if (!err) {
                const profile = (res as { profile: { head: Node } }).profile;
                fs.mkdirSync(dir, { recursive: true });
                fs.writeFileSync(path.join(dir, `${label}.heapprofile`), JSON.stringify(profile));
                summary = summarize(profile.head);
            }
            finish({ allocations: summary });
        });
    });
}

/** The files in require's cache by package (the provider's own by file name): what the server has loaded. */
function modulesLoaded(): Record<string, number> {
    const out = new Map<string, number>();
    for (const f of Object.keys(require.cache)) {
        const m = /node_modules\/((?:@[^/]+\/)?[^/]+)(\/.*)?$/.exec(f);
        const k = m ? (m[1] === "@pulumi/pulumi" ? `@pulumi/pulumi/${m[2]!.split("/")[1]}` : m[1]!) : `provider:${path.basename(f)}`;
        out.set(k, (out.get(k) ?? 0) + 1);
    }
    return Object.fromEntries([...out].sort((a, b) => b[1] - a[1]));
}

/** Resident memory by mapping: files by name, the brk heap, anonymous mappings by reserved size. */
function smaps(): Record<string, number> {
    const out = new Map<string, number>();
    let name = "";
    for (const line of fs.readFileSync("/proc/self/smaps", "utf8").split("\n")) {
        const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
        if (head) {
            const [a, b] = line
                .split(" ")[0]!
                .split("-")
                .map((x) => parseInt(x, 16));
            const p = head[1]!.trim();
            name = p
                ? p.startsWith("/")
                    ? path.basename(p)
                    : p
                : `[anon ${b! - a! >= 2 ** 26 ? ">=64M" : b! - a! >= 2 ** 20 ? "1M-64M" : "<1M"}]`;
            continue;
        }
        const m = /^Rss:\s+(\d+) kB/.exec(line);
        if (m) out.set(name, (out.get(name) ?? 0) + Number(m[1]));
    }
    return Object.fromEntries(
        [...out]
            .filter(([, v]) => v >= 256)
            .sort((x, y) => y[1] - x[1])
            .map(([k, v]) => [k, Math.round(v / 102.4) / 10]),
    );
}

interface Node {
    callFrame: { functionName: string; url: string; lineNumber: number };
    selfSize: number;
    children: Node[];
}

/** Allocated bytes by the innermost frame in one of our files or a library (self), and by library (total). */
function summarize(head: Node): unknown {
    const byLib = new Map<string, number>(),
        byFrame = new Map<string, number>();
    const lib = (url: string) => {
        const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
        if (m) return m[1]!;
        if (/\/dist\//.test(url)) return "provider:" + path.basename(url);
        return url.startsWith("node:") ? "node" : url ? "other" : "(native/gc)";
    };
    const walk = (n: Node, owner: string | undefined) => {
        const l = lib(n.callFrame.url);
        // Attribute to the innermost library or provider file on the stack: what node's own code
        // allocates counts for its caller, fast-xml-parser's garbage for fast-xml-parser.
        const o = l === "node" || l === "other" || l === "(native/gc)" ? owner : l;
        const key = o ?? l;
        byLib.set(key, (byLib.get(key) ?? 0) + n.selfSize);
        const f = `${n.callFrame.functionName || "(anon)"} ${path.basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
        byFrame.set(f, (byFrame.get(f) ?? 0) + n.selfSize);
        for (const c of n.children) walk(c, o);
    };
    walk(head, undefined);
    const top = (m: Map<string, number>, k: number) =>
        [...m]
            .sort((a, b) => b[1] - a[1])
            .slice(0, k)
            .map(([n, v]) => [n, Math.round(v / 2 ** 10)]);
    return { unit: "KiB", byOwner: top(byLib, 30), byFrame: top(byFrame, 40) };
}
