// The real Pulumi CLI, as the lab found or built it (scripts/lab/pulumi-cli/ensure.sh writes
// .lab/lab.json's `pulumi`), and the child process that drives it (test/support/cli-program.ts).
//
// The Node.js language host is refused by the Go module proxy here, so `pulumi up` of a project
// directory can't run. Inline Automation API programs need no language host: the child process
// serves the program itself and the CLI's engine does the rest (plans, diffs, the state file,
// secrets), starting the dynamic-provider plugin as it does under `pulumi up`.
import { spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { LocalWorkspace, PulumiCommand, type PulumiFn, type Stack } from "@pulumi/pulumi/automation";
import { loadLab, repoRoot, run, type LabInfo } from "./lab";

export interface PulumiCliInfo {
    bin: string | null;
    version: string | null;
    source: "path" | "built" | null;
    reason: string | null;
    languageHost: string | null;
    languageHostReason: string | null;
}

/** The CLI from lab.json; throws with the lab's reason when there is none (the suite then fails, never skips). */
export function pulumiCli(lab: LabInfo = loadLab()): PulumiCliInfo & { bin: string; version: string } {
    const p = (lab as LabInfo & { pulumi?: PulumiCliInfo }).pulumi;
    if (!p) throw new Error(".lab/lab.json has no `pulumi`: re-run 'npm run lab' (scripts/lab/pulumi-cli/ensure.sh adds it)");
    if (!p.bin || !p.version) throw new Error(`no Pulumi CLI in the lab: ${p.reason ?? "(no reason recorded)"}`);
    return p as PulumiCliInfo & { bin: string; version: string };
}

/**
 * The environment of every CLI run under DIR (its `home` and `state` folders): its own PULUMI_HOME and file backend,
 * the stack's passphrase, nothing that waits on the web, and on PATH the CLI first, then the dynamic-provider plugin
 * (pulumi-resource-pulumi-nodejs ships in @pulumi/pulumi).
 */
export function cliEnv(bin: string, dir: string, passphrase: string) {
    return {
        PULUMI_HOME: path.join(dir, "home"),
        PULUMI_SKIP_UPDATE_CHECK: "true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
        PULUMI_BACKEND_URL: `file://${path.join(dir, "state")}`,
        PULUMI_CONFIG_PASSPHRASE: passphrase,
        PATH: [path.dirname(bin), path.join(repoRoot(), "node_modules", "@pulumi", "pulumi"), process.env.PATH].join(":"),
    };
}

/**
 * An inline program's stack, in the environment cliEnv() made (PULUMI_HOME, the backend): `pulumi` from PATH, where
 * cliEnv() puts the lab's first, with the SDK's own minimum-version check.
 */
export async function inlineStack(project: string, stackName: string, workDir: string, program: PulumiFn): Promise<Stack> {
    return LocalWorkspace.createOrSelectStack(
        { stackName, projectName: project, program },
        {
            workDir,
            pulumiHome: process.env.PULUMI_HOME,
            pulumiCommand: await PulumiCommand.get(),
            projectSettings: { name: project, runtime: "nodejs", backend: { url: process.env.PULUMI_BACKEND_URL } },
        },
    );
}

/** The stack config that points a program's resources without a connection of their own at the lab's host. */
export function labStackConfig(conn: { host: string; port: number; user: string; hostKey: string }, privateKey: string) {
    return {
        "libvirt-snapshots:host": { value: conn.host },
        "libvirt-snapshots:port": { value: String(conn.port) },
        "libvirt-snapshots:user": { value: conn.user },
        "libvirt-snapshots:hostKey": { value: conn.hostKey },
        "libvirt-snapshots:privateKey": { value: privateKey, secret: true },
    };
}

/** A resource of the program: `args` values may be "$connection" (the SSH connection, key as a secret) or "$ref:RES.OUTPUT". */
export interface ResourceSpec {
    kind: "DomainSnapshot" | "DomainCheckpoint" | "DomainBackup" | "RestorePoint" | "SnapshotRevert";
    name: string;
    args: Record<string, unknown>;
    opts?: {
        deleteBeforeReplace?: boolean;
        protect?: boolean;
        retainOnDelete?: boolean;
        ignoreChanges?: string[];
        replaceOnChanges?: string[];
        dependsOn?: string[];
        /** The `import` option: the id of an existing resource to take over. */
        import?: string;
        /** Earlier logical names of this resource (`aliases: [{ name }]`). */
        aliases?: string[];
    };
    /** Exported as stack outputs "NAME.OUTPUT", each as { value } or { undefined: true }. */
    exports?: string[];
}

export interface ProgramSpec {
    resources: ResourceSpec[];
}

export type Op = "preview" | "previewRefresh" | "up" | "upExpectNoChanges" | "refresh" | "destroy" | "export";

export interface StepEvent {
    op: string;
    urn: string;
    name: string;
    type: string;
    diffs?: string[];
    /** For refresh steps: output keys whose value the step changed (old vs new outputs). */
    changedOutputs?: string[];
}

export interface OpResult {
    ok: boolean;
    error?: string;
    /** What the CLI printed (its own progress and summary). */
    stdout: string;
    stderr: string;
    changeSummary?: Record<string, number>;
    outputs?: Record<string, { value: unknown; secret: boolean }>;
    /** Every step the engine reported, in the order it reported them (resourcePreEvent). */
    steps: StepEvent[];
    /** For "export": the deployment `pulumi stack export` printed. */
    deployment?: unknown;
    /** The stack config is in place (written by this run or an earlier one). */
    configured?: boolean;
    ms: number;
}

export interface RunOptions {
    target?: string[];
    /** URNs to replace (`pulumi up --replace`). */
    replace?: string[];
    /** `pulumi refresh --clear-pending-creates`: what the interactive refresh's "clear" choice does. */
    clearPendingCreates?: boolean;
    timeoutMs?: number;
    /** PULUMI_DEBUG_GRPC's file: the CLI logs every gRPC call with its plugins there, decrypted inputs included. */
    debugGrpcLog?: string;
}

/** One stack of the CLI suite: its own work dir, PULUMI_HOME and file backend under .lab/cli/, a passphrase of its own. */
export class CliStack {
    readonly dir: string;
    readonly passphrase = crypto.randomBytes(18).toString("base64url");
    /** The stack config is written by the first operation only (each config write is a CLI run). */
    private configured = false;
    /** Every operation's wall time, for the suite's report. */
    readonly timings: Array<{ op: Op; ms: number }> = [];

    constructor(
        readonly project: string,
        readonly stack: string,
        readonly lab: LabInfo = loadLab(),
    ) {
        if (!/^[a-z0-9-]+$/.test(project) || !/^[a-z0-9-]+$/.test(stack)) throw new Error("project and stack: [a-z0-9-]+");
        this.dir = path.join(repoRoot(), ".lab", "cli", `${project}-${stack}`);
        fs.rmSync(this.dir, { recursive: true, force: true });
        fs.mkdirSync(path.join(this.dir, "work"), { recursive: true, mode: 0o700 });
        fs.mkdirSync(path.join(this.dir, "state"), { recursive: true, mode: 0o700 });
        fs.mkdirSync(path.join(this.dir, "home"), { recursive: true, mode: 0o700 });
    }

    get workDir(): string {
        return path.join(this.dir, "work");
    }
    get stateDir(): string {
        return path.join(this.dir, "state");
    }
    /** The checkpoint file the file backend keeps for this stack. */
    get stateFile(): string {
        return path.join(this.stateDir, ".pulumi", "stacks", this.project, `${this.stack}.json`);
    }

    /** The environment of every CLI run: nothing waits on the web, nothing leaves .lab/cli. */
    env(): NodeJS.ProcessEnv {
        return { ...cliEnv(pulumiCli(this.lab).bin, this.dir, this.passphrase), PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK: undefined };
    }

    /** Runs OP on PROGRAM in a child process (test/support/cli-program.js). */
    run(op: Op, program: ProgramSpec, options: RunOptions = {}): Promise<OpResult> {
        return this.start(op, program, options).result;
    }

    /**
     * Starts OP as run() does, in a process group of its own, as a shell starts a job: `group` is its id (the
     * cli-program's pid), for a test that interrupts the CLI (test/interrupted.test.ts). `result` rejects when the
     * child wrote no result (it was killed).
     */
    start(op: Op, program: ProgramSpec, options: RunOptions = {}): { group: number; result: Promise<OpResult> } {
        const stamp = `${Date.now()}-${crypto.randomBytes(3).toString("hex")}`;
        const specFile = path.join(this.dir, `spec-${op}-${stamp}.json`);
        const resultFile = path.join(this.dir, `result-${op}-${stamp}.json`);
        const conn = {
            host: this.lab.host,
            port: this.lab.port,
            user: this.lab.user,
            hostKey: this.lab.hostKey,
            privateKeyPath: this.lab.privateKeyPath,
        };
        fs.writeFileSync(
            specFile,
            JSON.stringify({
                project: this.project,
                stack: this.stack,
                workDir: this.workDir,
                op,
                program,
                target: options.target,
                replace: options.replace,
                clearPendingCreates: options.clearPendingCreates,
                conn,
                configure: !this.configured,
            }),
            { mode: 0o600 },
        );
        const childScript = path.join(repoRoot(), ".build", "test", "support", "cli-program.js");
        const t0 = Date.now();
        const child = spawn(process.execPath, [childScript, specFile, resultFile], {
            env: {
                ...process.env,
                ...this.env(),
                ...(options.debugGrpcLog ? { PULUMI_DEBUG_GRPC: options.debugGrpcLog } : {}),
                LC_ALL: "C",
            },
            cwd: this.workDir,
            detached: true,
            stdio: ["ignore", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
        child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
        const limit = setTimeout(() => killGroup(child.pid!, "SIGKILL"), options.timeoutMs ?? 240_000);
        const result = new Promise<OpResult>((resolve, reject) => {
            child.once("error", reject);
            child.once("close", (code, signal) => {
                clearTimeout(limit);
                const ms = Date.now() - t0;
                this.timings.push({ op, ms });
                try {
                    const r = JSON.parse(fs.readFileSync(resultFile, "utf8")) as OpResult;
                    if (r.configured) this.configured = true;
                    resolve({ ...r, ms });
                } catch {
                    const how = signal ? `killed by ${signal}` : `exit ${code}`;
                    reject(new Error(`cli-program ${op} wrote no result (${how}):\n${stderr.slice(-4000)}\n${stdout.slice(-2000)}`));
                } finally {
                    fs.rmSync(specFile, { force: true });
                    fs.rmSync(resultFile, { force: true });
                }
            });
        });
        return { group: child.pid!, result };
    }

    /** Like run(), but throws with what the CLI printed unless the operation succeeded. */
    async ok(op: Op, program: ProgramSpec, options: RunOptions = {}): Promise<OpResult> {
        const r = await this.run(op, program, options);
        if (!r.ok)
            throw new Error(`pulumi ${op} failed: ${r.error}\n--- stdout\n${r.stdout.slice(-6000)}\n--- stderr\n${r.stderr.slice(-3000)}`);
        return r;
    }

    /** The CLI binary itself, with this stack's environment (e.g. `pulumi stack export`). */
    cli(args: readonly string[]): ReturnType<typeof run> {
        return run(pulumiCli(this.lab).bin, args, { env: this.env(), cwd: this.workDir, timeoutMs: 120_000 });
    }

    dispose(): void {
        fs.rmSync(this.dir, { recursive: true, force: true });
    }
}

/** A signal to a whole process group; one already gone is no error. */
export function killGroup(group: number, signal: NodeJS.Signals): void {
    try {
        process.kill(-group, signal);
    } catch {
        /* gone */
    }
}

/** The type token each class registers (provider/index.ts: module libvirt-snapshots, type = the class's name). */
export function typeOf(kind: ResourceSpec["kind"]): string {
    return `pulumi-nodejs:dynamic/libvirt-snapshots:${kind}`;
}

/** The URN the engine gives a resource of a CliStack's program. */
export function urnOf(s: Pick<CliStack, "stack" | "project">, r: Pick<ResourceSpec, "kind" | "name">): string {
    return `urn:pulumi:${s.stack}::${s.project}::${typeOf(r.kind)}::${r.name}`;
}
