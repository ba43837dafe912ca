// Measurement helpers: timing, medians and rounding, bounded parallelism, and what a
// process costs (CPU from /proc/PID/stat, memory from /proc/PID/status).
import * as fs from "node:fs";
import * as path from "node:path";
import { lab } from "./config";

export const now = () => performance.now();

export function median(xs: number[]): number {
    if (!xs.length) return NaN;
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
export const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
export const r2 = (x: number) => Math.round(x * 100) / 100;
export const r1 = (x: number) => Math.round(x * 10) / 10;
export const ms = (x: number) => `${x.toFixed(1)} ms`;

/** Wall times of one create → read → delete, and their sum. */
export interface Trio {
    create: number;
    read: number;
    del: number;
    total: number;
}

/** Run fn over items with at most n in flight (the engine's parallelism). */
export async function pool<T, R>(n: number, items: readonly T[], fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
    const out = new Array<R>(items.length);
    let next = 0;
    const worker = async () => {
        while (next < items.length) {
            const i = next++;
            out[i] = await fn(items[i]!, i);
        }
    };
    await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
    return out;
}

// ---- CPU accounting (/proc, clock ticks of 10 ms) ---------------------------------------

/** utime+stime of a process, plus cutime+cstime (its children that have exited), in ms. */
export function cpuMs(pid: number, withChildren = true): number {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        const f = stat
            .slice(stat.lastIndexOf(")") + 2)
            .split(" ")
            .map(Number);
        // fields 14-17 of stat: utime stime cutime cstime; after the comm they are at 11..14
        return (f[11]! + f[12]! + (withChildren ? f[13]! + f[14]! : 0)) * 10;
    } catch {
        return 0;
    }
}

/** The cutime+cstime of a process (its children that have exited and been reaped), in ms. */
export function reapedChildrenCpuMs(pid: number): number {
    return cpuMs(pid) - cpuMs(pid, false);
}

/** Each live process under root (root included): its own CPU, and with its reaped children, in ms. */
export function treeCpu(root: number): Map<number, { self: number; all: number }> {
    const parent = new Map<number, number>();
    for (const e of fs.readdirSync("/proc")) {
        if (!/^\d+$/.test(e)) continue;
        try {
            const stat = fs.readFileSync(`/proc/${e}/stat`, "utf8");
            parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
        } catch {
            /* gone */
        }
    }
    const out = new Map<number, { self: number; all: number }>();
    for (const pid of parent.keys()) {
        for (let p: number | undefined = pid; p !== undefined && p > 1; p = parent.get(p)) {
            if (p === root) {
                out.set(pid, { self: cpuMs(pid, false), all: cpuMs(pid) });
                break;
            }
        }
    }
    return out;
}

/**
 * CPU a process tree spent between two readings (`at` and `after`), where the processes that
 * were not there at `before` (this round's connections and the long-lived shells they started)
 * count in full, from their start, and the others by their growth. `longLived` is what those
 * new processes still running at `after` spent themselves (their exited children, e.g. the
 * virsh processes each command starts, not included).
 */
export function treeCpuSince(
    before: ReadonlyMap<number, { all: number }>,
    at: ReadonlyMap<number, { all: number }>,
    after: ReadonlyMap<number, { self: number; all: number }>,
): { total: number; longLived: number } {
    let total = 0,
        longLived = 0;
    for (const [pid, cpu] of after) {
        if (before.has(pid)) total += cpu.all - (at.get(pid) ?? before.get(pid)!).all;
        else {
            total += cpu.all;
            longLived += cpu.self;
        }
    }
    return { total, longLived };
}

function pidOfFile(file: string): number | undefined {
    try {
        return Number(fs.readFileSync(file, "utf8").trim()) || undefined;
    } catch {
        return undefined;
    }
}

/** CPU (ms) spent by libvirtd and the given domains' qemu processes. */
export function hostCpu(domains: readonly string[]): { libvirtd: number; qemu: number } {
    const lv = pidOfFile(path.join(lab.labDir, "libvirtd.pid"));
    return {
        libvirtd: lv ? cpuMs(lv, false) : 0,
        qemu: sum(
            domains.map((d) => {
                const p = pidOfFile(`/run/libvirt/qemu/${d}.pid`);
                return p ? cpuMs(p, false) : 0;
            }),
        ),
    };
}

// ---- memory -----------------------------------------------------------------------------

/** VmRSS and VmHWM (the highest RSS so far) of a process, in kB. */
export function memoryKb(pid: number): { rssKb: number; hwmKb: number } {
    const text = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, "m").exec(text)?.[1] ?? NaN);
    return { rssKb: kb("VmRSS"), hwmKb: kb("VmHWM") };
}

/** Samples a process's VmRSS every 10 ms, keeping the highest, until stop(). */
export class PeakRssSampler {
    private peak: number;
    private readonly timer: NodeJS.Timeout;
    constructor(
        private readonly pid: number,
        startKb: number,
    ) {
        this.peak = startKb;
        this.timer = setInterval(() => {
            try {
                this.peak = Math.max(this.peak, memoryKb(pid).rssKb);
            } catch {
                /* exited */
            }
        }, 10);
    }
    /** Stops sampling; the highest sample, or VmHWM if higher (the kernel's own peak between samples). */
    stop(): number {
        clearInterval(this.timer);
        const m = memoryKb(this.pid);
        return Math.max(this.peak, m.rssKb, m.hwmKb);
    }
}

/**
 * Samples the CPU (utime+stime, ms) of every process under root, root included, every 50 ms until
 * stop(), keeping each one's last reading, its command line and when it was first seen: what a tree
 * of short-lived processes spent, each process counted until its last sample (up to 50 ms short of
 * its exit).
 */
export class TreeCpuSampler {
    private readonly seen = new Map<number, { ms: number; cmdline: string; firstSeen: number }>();
    private readonly timer: NodeJS.Timeout;
    constructor(private readonly root: number) {
        this.sample();
        this.timer = setInterval(() => this.sample(), 50);
    }
    private sample(): void {
        for (const [pid, cpu] of treeCpu(this.root)) {
            const known = this.seen.get(pid);
            let cmdline = known?.cmdline;
            if (cmdline === undefined) {
                try {
                    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
                } catch {
                    continue;
                }
            }
            this.seen.set(pid, { ms: Math.max(known?.ms ?? 0, cpu.self), cmdline, firstSeen: known?.firstSeen ?? Date.now() });
        }
    }
    /** Stops sampling; each process seen, with its CPU (ms), command line and when it was first seen (epoch ms). */
    stop(): Array<{ pid: number; ms: number; cmdline: string; firstSeen: number }> {
        clearInterval(this.timer);
        this.sample();
        return [...this.seen].map(([pid, v]) => ({ pid, ...v }));
    }
}
