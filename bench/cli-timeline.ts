// Where a `pulumi OP` spends its time, from the CLI's own gRPC log (PULUMI_DEBUG_GRPC): when the program
// ran, when the dynamic-provider plugin answered its first call, and for each provider method (Check,
// Diff, Create, Delete) how many calls, from the first start to the last end, their summed time, the
// most in flight at once and the median call. Only method names, times and durations are read: the log
// holds decrypted inputs, so no request or response is kept, and the caller removes the file at once.
import * as fs from "node:fs";
import { median } from "./measure";

interface Call {
    method: string;
    start: number;
    end: number;
}

export interface MethodSpan {
    n: number;
    /** From the CLI's start (ms). */
    firstStart: number;
    lastEnd: number;
    sumMs: number;
    maxInFlight: number;
    medianMs: number;
}

export interface Timeline {
    /** From the CLI's start (ms): the language runtime's Run (the program) started; the plugin's first call (Handshake). */
    programAt?: number;
    pluginAt?: number;
    methods: Record<string, MethodSpan>;
}

/** Reads the log of one CLI run that started at `startedAt` (epoch ms). */
export function readTimeline(file: string, startedAt: number): Timeline {
    const calls: Call[] = [];
    for (const line of fs.readFileSync(file, "utf8").split("\n")) {
        if (!line.trim()) continue;
        let e: { method?: string; progress?: string; timestamp?: string; duration?: number };
        try {
            e = JSON.parse(line) as typeof e;
        } catch {
            continue;
        }
        // The completed calls carry their end time and duration (ns); the engine's own server side logs a zero time.
        if (e.progress !== "response_completed" || !e.method || !e.timestamp || typeof e.duration !== "number") continue;
        const end = Date.parse(e.timestamp);
        if (!(end > startedAt - 60_000) || e.duration > 3.6e12) continue;
        calls.push({ method: e.method, start: end - e.duration / 1e6 - startedAt, end: end - startedAt });
    }
    const of = (m: string) => calls.filter((c) => c.method === m);
    const methods: Record<string, MethodSpan> = {};
    for (const m of ["Check", "Diff", "Create", "Delete", "Read", "Update"]) {
        const cs = of(`/pulumirpc.ResourceProvider/${m}`);
        if (!cs.length) continue;
        const edges = cs.flatMap((c) => [
            [c.start, 1],
            [c.end, -1],
        ]);
        edges.sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!);
        let inFlight = 0,
            maxInFlight = 0;
        for (const [, d] of edges) maxInFlight = Math.max(maxInFlight, (inFlight += d!));
        methods[m] = {
            n: cs.length,
            firstStart: Math.min(...cs.map((c) => c.start)),
            lastEnd: Math.max(...cs.map((c) => c.end)),
            sumMs: cs.reduce((a, c) => a + c.end - c.start, 0),
            maxInFlight,
            medianMs: median(cs.map((c) => c.end - c.start)),
        };
    }
    return {
        programAt: of("/pulumirpc.LanguageRuntime/Run")[0]?.start,
        pluginAt: of("/pulumirpc.ResourceProvider/Handshake")[0]?.start,
        methods,
    };
}
