// The child process of the CLI phase (bench/phases/cli.ts): one Pulumi operation on an inline
// Automation API program of DomainSnapshots spread over the lab's hosts, run by the lab's real
// Pulumi CLI, timed.
//
//   node .build/bench/cli-program.js SPEC.json RESULT.json
//
// The environment (PULUMI_HOME, the file backend, the passphrase, PATH with the CLI and the
// dynamic-provider plugin) is cliEnv()'s, set by the parent. Each resource names its host in its
// own `connection`, the private key read here from its file and passed as a secret: it is never in
// SPEC or RESULT. The provider's own settings (SSH session reuse, parallelism) are its defaults.
//
// What is timed: the `pulumi OP` process itself. The SDK's up() and destroy() also run
// `pulumi stack output` and `pulumi stack history` after the operation, which a user's `pulumi up`
// does not; those are reported apart (apiMs is the whole SDK call).
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import type { PulumiCommand } from "@pulumi/pulumi/automation";
import * as lib from "pulumi-libvirt-snapshots";
import { inlineStack } from "../test/support/pulumiCli";

export type CliOp = "init" | "preview" | "up" | "upNoChanges" | "destroy";

export interface CliHost {
    host: string;
    port: number;
    user: string;
    hostKey: string;
    privateKeyPath: string;
}

export interface CliSpec {
    project: string;
    stack: string;
    workDir: string;
    op: CliOp;
    /** The lab hosts by name. */
    hosts: Record<string, CliHost>;
    /** One DomainSnapshot each: its logical name, the host (a key of hosts), the domain's name, the snapshot's name. */
    snapshots: Array<{ resource: string; host: string; domain: string; snapshotName: string }>;
}

export interface CliResult {
    ok: boolean;
    error?: string;
    /** The wall time of the `pulumi OP` process (ms); undefined for init. */
    cliMs?: number;
    /** The wall time of the whole SDK call, its extra CLI runs included (ms). */
    apiMs?: number;
    /** Every CLI process the SDK ran during the operation: its subcommand, when it started (epoch ms) and its wall time. */
    runs: Array<{ cmd: string; startedAt: number; ms: number }>;
    /** When the `pulumi OP` process started (epoch ms). */
    startedAt?: number;
    /**
     * This process's own start: node, @pulumi/pulumi, the Automation API and this package loaded (ms from its start).
     * An inline program pays it before `pulumi OP` starts; under `pulumi up` of a project directory the language
     * host starts such a process inside the operation.
     */
    programLoadMs: number;
    changeSummary?: Record<string, number>;
    /** The CLI's own output, for errors. */
    stdout: string;
}

/** Records the wall time of every CLI process the SDK starts through cmd (its internal run(), wrapped). */
function timeRuns(cmd: PulumiCommand, runs: CliResult["runs"]): void {
    const c = cmd as unknown as { run?: (args: string[], ...rest: unknown[]) => Promise<unknown> };
    if (typeof c.run !== "function") throw new Error("@pulumi/pulumi's PulumiCommand has no run(): the CLI phase can't time the CLI");
    const inner = c.run.bind(cmd);
    c.run = async (args: string[], ...rest: unknown[]) => {
        const startedAt = Date.now(),
            t0 = performance.now();
        try {
            return await inner(args, ...rest);
        } finally {
            runs.push({ cmd: args[0] ?? "", startedAt, ms: performance.now() - t0 });
        }
    };
}

function programOf(spec: CliSpec): () => Promise<void> {
    const keys = new Map<string, string>();
    const connection = (name: string) => {
        const h = spec.hosts[name];
        if (!h) throw new Error(`no host ${name} in the spec`);
        if (!keys.has(h.privateKeyPath)) keys.set(h.privateKeyPath, fs.readFileSync(h.privateKeyPath, "utf8"));
        return { host: h.host, port: h.port, user: h.user, hostKey: h.hostKey, privateKey: pulumi.secret(keys.get(h.privateKeyPath)!) };
    };
    return async () => {
        for (const s of spec.snapshots) {
            new lib.DomainSnapshot(s.resource, { domain: s.domain, snapshotName: s.snapshotName, connection: connection(s.host) });
        }
    };
}

async function main(): Promise<void> {
    const [specFile, resultFile] = process.argv.slice(2);
    if (!specFile || !resultFile) throw new Error("usage: cli-program SPEC.json RESULT.json");
    const spec = JSON.parse(fs.readFileSync(specFile, "utf8")) as CliSpec;
    const result: CliResult = { ok: false, runs: [], stdout: "", programLoadMs: performance.now() };
    try {
        const stack = await inlineStack(spec.project, spec.stack, spec.workDir, programOf(spec));
        timeRuns(stack.workspace.pulumiCommand, result.runs);
        const common = { color: "never" as const, onOutput: (s: string) => (result.stdout += s) };
        const t0 = performance.now();
        switch (spec.op) {
            case "init":
                break;
            case "preview":
                result.changeSummary = (await stack.preview(common)).changeSummary as Record<string, number>;
                break;
            case "up":
            case "upNoChanges":
                result.changeSummary = (await stack.up({ ...common, expectNoChanges: spec.op === "upNoChanges" })).summary
                    .resourceChanges as Record<string, number>;
                break;
            case "destroy":
                result.changeSummary = (await stack.destroy(common)).summary.resourceChanges as Record<string, number>;
                break;
        }
        if (spec.op !== "init") {
            result.apiMs = performance.now() - t0;
            const own = result.runs.filter((r) => r.cmd === (spec.op === "upNoChanges" ? "up" : spec.op));
            if (own.length !== 1) throw new Error(`expected one 'pulumi ${spec.op}' process, the SDK ran: ${JSON.stringify(result.runs)}`);
            result.cliMs = own[0]!.ms;
            result.startedAt = own[0]!.startedAt;
        }
        result.ok = true;
    } catch (e) {
        result.error = e instanceof Error ? e.message : String(e);
        const x = e as { commandResult?: { stdout?: string; stderr?: string } };
        if (x.commandResult) result.stdout ||= `${x.commandResult.stdout ?? ""}\n${x.commandResult.stderr ?? ""}`;
    }
    fs.writeFileSync(resultFile, JSON.stringify(result), { mode: 0o600 });
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
