// Records, with PULUMI_DEBUG_GRPC, the calls the real Pulumi engine makes to our dynamic provider, and prints
// their SHAPE only: for each call, the method, the request's fields and the property names it carried (never a
// value: the log holds decrypted inputs, the private key among them). The log stays under .lab/cli/ (a 0700
// folder), is created 0600, and is removed before this exits, also on failure. test/harness/engine.ts is meant
// to make the same calls; compare with what it sets (issue #22, "the harness, checked against the engine").
//
//   node .build/test/support/grpc-record.js        (the lab up, LAB_HOST as usual)
//
// Scenario, on a throwaway shut-off domain: preview, up (create), up (description: update in place), refresh,
// up with `atomic` changed (replace, deleteBeforeReplace), destroy.
import * as fs from "node:fs";
import * as path from "node:path";
import { makeDomain } from "./lab";
import { CliStack, type Op, type ProgramSpec } from "./pulumiCli";

interface LogEntry {
    method?: string;
    request?: Record<string, unknown>;
    response?: Record<string, unknown>;
    errors?: unknown;
}

/** Field names of a message; for a property map, `field{key,key}` (keys only, sorted). */
function shape(msg: Record<string, unknown> | undefined): string {
    if (!msg) return "-";
    return Object.keys(msg)
        .sort()
        .map((k) => {
            const v = msg[k];
            if (v && typeof v === "object" && !Array.isArray(v)) return `${k}{${Object.keys(v).sort().join(",")}}`;
            // Booleans, the diff verdict and the property names a diff lists: no values of inputs.
            if (typeof v === "boolean" || k === "changes") return `${k}=${String(v)}`;
            if (Array.isArray(v)) return ["replaces", "diffs", "stables"].includes(k) ? `${k}[${v.join(",")}]` : `${k}[${v.length}]`;
            return k;
        })
        .join(" ");
}

async function main(): Promise<void> {
    const dom = await makeDomain({ prefix: "labgrpc-", running: false });
    const s = new CliStack("cli-grpc", "rec");
    const log = path.join(s.dir, "grpc.log");
    fs.writeFileSync(log, "", { mode: 0o600 });
    const snap = (args: Record<string, unknown>): ProgramSpec => ({
        resources: [{ kind: "DomainSnapshot", name: "grpc-snap", args: { domain: dom.name, ...args } }],
    });
    const steps: Array<[string, Op, ProgramSpec]> = [
        ["preview of a create", "preview", snap({ description: "one" })],
        ["up: create", "up", snap({ description: "one" })],
        ["up: description, update in place", "up", snap({ description: "two" })],
        ["refresh", "refresh", snap({ description: "two" })],
        ["up: atomic, replace (deleteBeforeReplace)", "up", snap({ description: "two", atomic: false })],
        ["destroy", "destroy", snap({ description: "two", atomic: false })],
    ];
    try {
        for (const [title, op, program] of steps) {
            fs.truncateSync(log);
            await s.ok(op, program, { debugGrpcLog: log });
            console.log(`\n== ${title}`);
            for (const line of fs.readFileSync(log, "utf8").split("\n")) {
                if (!line.trim()) continue;
                let e: LogEntry;
                try {
                    e = JSON.parse(line) as LogEntry;
                } catch {
                    continue;
                }
                // Only the calls to resource providers (ours is pulumi-resource-pulumi-nodejs), not the language runtime's.
                if (!e.method?.startsWith("/pulumirpc.ResourceProvider/")) continue;
                const m = e.method.split("/").pop();
                if (m === "GetPluginInfo" || m === "Attach" || m === "GetSchema") continue;
                // Each call is logged twice: when it starts (no response yet) and when it ends. Keep the end.
                if (e.response === undefined && e.errors === undefined) continue;
                console.log(
                    `  ${m}\n    request:  ${shape(e.request)}\n    response: ${shape(e.response)}${e.errors ? `\n    errors: ${JSON.stringify(e.errors).slice(0, 160)}` : ""}`,
                );
            }
        }
    } finally {
        fs.rmSync(log, { force: true });
        s.dispose();
        await dom.dispose();
    }
}

main().catch((e) => {
    // The message only: a failed step's output could quote the log's neighbourhood, never the log itself.
    console.error(e instanceof Error ? e.message.split("\n")[0] : String(e));
    process.exit(1);
});
