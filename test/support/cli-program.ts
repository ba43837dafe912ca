// The child process of the CLI suite (test/support/pulumiCli.ts): one Pulumi operation on an inline
// Automation API program, run by the real Pulumi CLI. This process serves the program (the Automation
// API's own language server, so no language host is needed); the CLI's engine plans, calls the
// dynamic-provider plugin, and writes the state.
//
//   node .build/test/support/cli-program.js SPEC.json RESULT.json
//
// The environment (PULUMI_HOME, PULUMI_BACKEND_URL, PULUMI_CONFIG_PASSPHRASE, PATH with the CLI and
// pulumi-resource-pulumi-nodejs) comes from CliStack.env(). The private key is read from its file here
// and goes to the stack config as a secret: it is never in SPEC or RESULT.
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import type { EngineEvent, OutputMap } from "@pulumi/pulumi/automation";
import * as lib from "pulumi-libvirt-snapshots";
import { inlineStack, labStackConfig, type Op, type OpResult, type ProgramSpec, type ResourceSpec, type StepEvent } from "./pulumiCli";

interface Spec {
    project: string;
    stack: string;
    workDir: string;
    op: Op;
    program: ProgramSpec;
    target?: string[];
    /** URNs to replace (`pulumi up --replace`). */
    replace?: string[];
    clearPendingCreates?: boolean;
    /** Write the stack config (the first operation on a stack). */
    configure: boolean;
    conn: { host: string; port: number; user: string; hostKey: string; privateKeyPath: string };
}

const CLASSES: Record<ResourceSpec["kind"], new (name: string, args: never, opts?: pulumi.CustomResourceOptions) => pulumi.CustomResource> =
    {
        DomainSnapshot: lib.DomainSnapshot,
        DomainCheckpoint: lib.DomainCheckpoint,
        DomainBackup: lib.DomainBackup,
        RestorePoint: lib.RestorePoint,
        SnapshotRevert: lib.SnapshotRevert,
    };

function programOf(spec: Spec, privateKey: string): () => Promise<Record<string, unknown>> {
    return async () => {
        const made = new Map<string, pulumi.CustomResource>();
        const resolve = (v: unknown): unknown => {
            if (v === "$connection") {
                const { privateKeyPath: _, ...c } = spec.conn;
                return { ...c, privateKey: pulumi.secret(privateKey) };
            }
            if (typeof v === "string" && v.startsWith("$ref:")) {
                const [res, out] = v.slice(5).split(".");
                const r = made.get(res!);
                if (!r) throw new Error(`$ref to ${res}, which is not declared before it`);
                return (r as unknown as Record<string, unknown>)[out!];
            }
            if (Array.isArray(v)) return v.map(resolve);
            if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolve(x)]));
            return v;
        };
        const exports: Record<string, unknown> = {};
        for (const r of spec.program.resources) {
            const o = r.opts ?? {};
            const res = new CLASSES[r.kind](r.name, resolve(r.args) as never, {
                deleteBeforeReplace: o.deleteBeforeReplace,
                protect: o.protect,
                retainOnDelete: o.retainOnDelete,
                ignoreChanges: o.ignoreChanges,
                replaceOnChanges: o.replaceOnChanges,
                import: o.import,
                aliases: o.aliases?.map((name) => ({ name })),
                dependsOn: (o.dependsOn ?? []).map((d) => {
                    const dep = made.get(d);
                    if (!dep) throw new Error(`${r.name} dependsOn ${d}, which is not declared before it`);
                    return dep;
                }),
            });
            made.set(r.name, res);
            for (const out of r.exports ?? []) {
                const value = (res as unknown as Record<string, unknown>)[out];
                if (!pulumi.Output.isInstance(value)) {
                    exports[`${r.name}.${out}`] = { notAnOutput: true };
                    continue;
                }
                // An output that is undefined is exported as such, so the suite can tell it from one that is missing.
                exports[`${r.name}.${out}`] = (value as pulumi.Output<unknown>).apply((x) =>
                    x === undefined ? { undefined: true } : { value: x },
                );
            }
        }
        return exports;
    };
}

function stepOf(e: EngineEvent): StepEvent | undefined {
    const m = e.resourcePreEvent?.metadata;
    if (!m || m.type === "pulumi:pulumi:Stack" || m.type.startsWith("pulumi:providers:")) return undefined;
    const step: StepEvent = { op: m.op, urn: m.urn, name: m.urn.split("::").pop()!, type: m.type };
    if (m.diffs?.length) step.diffs = m.diffs;
    return step;
}

/** Output keys whose value differs between a refresh step's old and new state. */
function changedOutputs(e: EngineEvent): { urn: string; keys: string[] } | undefined {
    const m = e.resOutputsEvent?.metadata;
    if (!m || !m.old || !m.new || m.type === "pulumi:pulumi:Stack") return undefined;
    const o = m.old.outputs ?? {},
        n = m.new.outputs ?? {};
    const keys = [...new Set([...Object.keys(o), ...Object.keys(n)])].filter((k) => JSON.stringify(o[k]) !== JSON.stringify(n[k]));
    return { urn: m.urn, keys: keys.sort() };
}

async function main(): Promise<void> {
    const [specFile, resultFile] = process.argv.slice(2);
    if (!specFile || !resultFile) throw new Error("usage: cli-program SPEC.json RESULT.json");
    const spec = JSON.parse(fs.readFileSync(specFile, "utf8")) as Spec;
    const privateKey = fs.readFileSync(spec.conn.privateKeyPath, "utf8");
    const result: OpResult = { ok: false, stdout: "", stderr: "", steps: [], ms: 0 };
    const t0 = Date.now();
    const write = () => {
        result.ms = Date.now() - t0;
        fs.writeFileSync(resultFile, JSON.stringify(result), { mode: 0o600 });
    };
    try {
        const stack = await inlineStack(spec.project, spec.stack, spec.workDir, programOf(spec, privateKey));
        if (spec.configure) await stack.setAllConfig(labStackConfig(spec.conn, privateKey));
        result.configured = true;
        const byUrn = new Map<string, StepEvent[]>();
        const onEvent = (e: EngineEvent) => {
            const s = stepOf(e);
            if (s) {
                result.steps.push(s);
                byUrn.set(s.urn, [...(byUrn.get(s.urn) ?? []), s]);
            }
            const c = changedOutputs(e);
            if (c) for (const s2 of byUrn.get(c.urn) ?? []) if (s2.op === "refresh") s2.changedOutputs = c.keys;
        };
        const onOutput = (s: string) => (result.stdout += s);
        const common = { onEvent, onOutput, color: "never" as const };
        let outputs: OutputMap | undefined;
        switch (spec.op) {
            case "preview":
            case "previewRefresh": {
                const r = await stack.preview({ ...common, refresh: spec.op === "previewRefresh", target: spec.target });
                result.changeSummary = r.changeSummary as Record<string, number>;
                break;
            }
            case "up":
            case "upExpectNoChanges": {
                const r = await stack.up({
                    ...common,
                    expectNoChanges: spec.op === "upExpectNoChanges",
                    target: spec.target,
                    replace: spec.replace,
                });
                result.changeSummary = r.summary.resourceChanges as Record<string, number>;
                outputs = r.outputs;
                break;
            }
            case "refresh": {
                const r = await stack.refresh({ ...common, clearPendingCreates: spec.clearPendingCreates });
                result.changeSummary = r.summary.resourceChanges as Record<string, number>;
                break;
            }
            case "destroy": {
                const r = await stack.destroy({ ...common });
                result.changeSummary = r.summary.resourceChanges as Record<string, number>;
                break;
            }
            case "export":
                result.deployment = await stack.exportStack();
                break;
        }
        if (outputs)
            result.outputs = Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, { value: v.value, secret: v.secret }]));
        result.ok = true;
    } catch (e) {
        result.ok = false;
        result.error = e instanceof Error ? e.message : String(e);
        const x = e as { commandResult?: { stdout?: string; stderr?: string } };
        if (x.commandResult) {
            result.stdout ||= x.commandResult.stdout ?? "";
            result.stderr = x.commandResult.stderr ?? "";
        }
    }
    write();
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
