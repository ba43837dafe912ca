// Upgrade through the real Pulumi CLI (issue #22, "Upgrade"). A recorded 0.1.0 state
// (test/fixtures/state, made by test/upgrade/record.ts) is a record of the harness, not a deployment:
// test/upgrade/toDeployment.ts makes it one. Then, on a fresh stack, as a user who upgraded would:
// `pulumi stack import`, `pulumi refresh`, `pulumi up` with today's program, `pulumi destroy`; after
// each, virsh and qemu-img show that nothing on the host was lost or duplicated. The state holds
// 0.1.0's shim text (`__provider`), which loads "pulumi-libvirt-snapshots/impl" by package name: that
// text, not today's, is what the engine hands the provider to refresh and to destroy with (the ABI
// guard; PULUMI_DEBUG_GRPC shows the requests).
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as util from "node:util";
import { PACKAGE_ROOT, PROVIDER_KEY } from "./harness/engine";
import { checkpointNames, domstate, qcow2Snapshots, snapshotNames } from "./support/helpers";
import { DEFAULT_HOST, loadLab, virshOk, type TestDomain } from "./support/lab";
import { CliStack, pulumiCli, urnOf, type OpResult, type ProgramSpec } from "./support/pulumiCli";
import { findLeaks, labSecrets } from "./support/secrets-hook";
import type { RecordedResource, RecordedState } from "./upgrade/record";
import { UPGRADE_DOMAINS, UPGRADE_RESOURCES, recreateHostObjects, upgradeDomains, type UpgradeType } from "./upgrade/scenario";
import {
    NODEJS_PROVIDER_TYPE,
    SECRET_SIG,
    SECRET_SIG_KEY,
    STACK_TYPE,
    defaultProviderUrn,
    stackUrn,
    toDeployment,
    type Deployment,
    type DeploymentResource,
} from "./upgrade/toDeployment";

const lab = loadLab();
const STATE_DIR = path.join(PACKAGE_ROOT, "test", "fixtures", "state");
const SHIMS = path.join(PACKAGE_ROOT, "test", "fixtures", "shims");
const recording = fs
    .readdirSync(STATE_DIR)
    .filter((f) => f.endsWith(".json"))
    .map((f) => JSON.parse(fs.readFileSync(path.join(STATE_DIR, f), "utf8")) as RecordedState)
    .find((r) => r.version === "0.1.0" && (r.host ?? DEFAULT_HOST) === lab.name);

/** Today's program: the scenario's resources by the same names and inputs, with today's classes. */
const PROGRAM: ProgramSpec = {
    resources: UPGRADE_RESOURCES.map((r) => ({
        kind: r.type,
        name: r.name,
        args: r.inputs,
        ...(r.dependsOn ? { opts: { dependsOn: r.dependsOn } } : {}),
    })),
};
const [OFF, RUN, IDLE] = UPGRADE_DOMAINS.map((d) => d.name) as [string, string, string];
/** Made on the host out of band, after the recorded objects: no state holds them, so nothing may touch them. */
const BYSTANDER = "bystander";

/**
 * What `pulumi refresh` changes in each resource's recorded outputs, the same on both hosts:
 * - added: outputs today's code writes and 0.1.0 did not (DomainSnapshot's recordLost, restoredAt and xml;
 *   DomainCheckpoint's recordLost and its bitmap health; each RestorePoint member's xml). Nothing recorded is lost.
 * - changed: a creation time (and the XML that holds it), because this test made the host's objects again with virsh
 *   (the recorded ones are long gone); for the same reason the running member of the restore point is "running", where
 *   the restore point had paused it ("paused"); isCurrent, because the recorder read it when the snapshot was taken,
 *   before the restore point's snapshot on the same domain became the current one; a checkpoint's changedBytesAt,
 *   measured again by design.
 */
const REFRESHED: Record<string, { added: string[]; changed: string[] }> = {
    snap: { added: ["recordLost", "restoredAt", "xml"], changed: ["creationTime", "isCurrent"] },
    ckpt: { added: ["bitmapProblems", "bitmapsHealthy", "recordLost"], changed: ["changedBytesAt", "creationTime", "xml"] },
    revert: { added: [], changed: [] },
    rp: {
        added: ["snapshots[0].xml", "snapshots[1].xml"],
        changed: ["snapshots[0].creationTime", "snapshots[1].creationTime", "snapshots[1].state"],
    },
};

interface Exported {
    version: number;
    deployment: { resources?: DeploymentResource[]; secrets_providers?: { type: string; state: unknown } };
}

const shimOf = (type: UpgradeType) => fs.readFileSync(path.join(SHIMS, "current", `${type}.txt`), "utf8");
const stepOps = (r: OpResult) => Object.fromEntries(r.steps.map((x) => [x.name, x.op]));
const sorted = (x: Iterable<string>) => [...x].sort();

/** Paths where two JSON values differ ("snapshots[1].state"); a key only one side has counts too. */
function changedPaths(a: unknown, b: unknown, at = ""): string[] {
    if (JSON.stringify(a) === JSON.stringify(b)) return [];
    if (a && b && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b)) {
        const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
        return [...keys].flatMap((k) =>
            changedPaths(
                (a as Record<string, unknown>)[k],
                (b as Record<string, unknown>)[k],
                Array.isArray(a) ? `${at}[${k}]` : at ? `${at}.${k}` : k,
            ),
        );
    }
    return [at];
}

/** The value at a path of changedPaths(). */
function valueAt(v: unknown, p: string): unknown {
    for (const k of p.split(/\.|\[|\]\.?/).filter(Boolean)) v = v && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined;
    return v;
}

/** The calls the CLI made to the dynamic provider (method: "Read", "Delete", ...), each by its request, from a PULUMI_DEBUG_GRPC log. */
function providerCalls(log: string, method: string): Array<Record<string, unknown>> {
    const calls: Array<Record<string, unknown>> = [];
    for (const line of fs.readFileSync(log, "utf8").split("\n")) {
        if (!line.startsWith("{")) continue;
        const e = JSON.parse(line) as { method?: string; request?: Record<string, unknown>; response?: unknown };
        // Each call is logged when it starts and when it ends; the end carries the response.
        if (e.method === `/pulumirpc.ResourceProvider/${method}` && e.response !== undefined) calls.push(e.request ?? {});
    }
    return calls;
}

/**
 * Runs an operation with PULUMI_DEBUG_GRPC. The log holds decrypted inputs (the stack's private key among them), so
 * it lives 0600 in the stack's 0700 folder under .lab/cli, is never printed, and is removed at once.
 */
async function withGrpcLog<T>(stack: CliStack, f: (log: string) => Promise<T>): Promise<T> {
    const log = path.join(stack.dir, "grpc.log");
    fs.writeFileSync(log, "", { mode: 0o600 });
    try {
        return await f(log);
    } finally {
        fs.rmSync(log, { force: true });
    }
}

/** The libvirt objects a resource's outputs name, as "DOMAIN snapshot NAME" / "DOMAIN checkpoint NAME". */
function objectsOf(type: string, outs: Record<string, unknown>): string[] {
    if (type.endsWith(":DomainSnapshot")) return [`${String(outs.domainName)} snapshot ${String(outs.snapshotName)}`];
    if (type.endsWith(":DomainCheckpoint")) return [`${String(outs.domainName)} checkpoint ${String(outs.checkpointName)}`];
    if (type.endsWith(":RestorePoint"))
        return (outs.snapshots as Array<{ domainName: string; snapshotName: string }>).map(
            (m) => `${m.domainName} snapshot ${m.snapshotName}`,
        );
    return []; // SnapshotRevert: an event in the past
}

describe(`upgrade through the real Pulumi CLI: 0.1.0's recorded state imported, refreshed, updated by today's program, destroyed (${lab.name})`, function () {
    this.timeout(300_000);
    this.slow(60_000);
    const stacks: CliStack[] = [];
    let s: CliStack;
    let domains: TestDomain[] = [];
    let passed = 0;
    /** The state after each step, from `pulumi stack export`. */
    let afterRefresh: Exported;

    const disk = (name: string) => domains.find((d) => d.name === name)!.disk;
    const rec = () => {
        assert.ok(recording, `no recording of 0.1.0 made on ${lab.name} in ${STATE_DIR}`);
        return recording;
    };
    const recorded = (name: string): RecordedResource => rec().resources.find((r) => r.name === name)!;

    /** What the host holds on the three domains: libvirt's lists, the qcow2 images' own snapshots, the domain states. */
    async function onHost(): Promise<Record<string, unknown>> {
        const out: Record<string, unknown> = {};
        for (const d of [OFF, RUN, IDLE]) {
            out[`${d} snapshots`] = sorted(await snapshotNames(d));
            out[`${d} checkpoints`] = sorted(await checkpointNames(d));
            out[`${d} image snapshots`] = sorted(await qcow2Snapshots(disk(d)));
            out[`${d} state`] = await domstate(d);
        }
        return out;
    }
    /** The host's snapshots and checkpoints as "DOMAIN snapshot NAME" / "DOMAIN checkpoint NAME". */
    async function objectsOnHost(): Promise<string[]> {
        const h = await onHost();
        return sorted(
            [OFF, RUN, IDLE].flatMap((d) => [
                ...(h[`${d} snapshots`] as string[]).map((n) => `${d} snapshot ${n}`),
                ...(h[`${d} checkpoints`] as string[]).map((n) => `${d} checkpoint ${n}`),
            ]),
        );
    }
    /** What the host holds while the state holds the recorded resources; the bystanders are in no state. */
    const WITH_STATE = {
        [`${OFF} snapshots`]: ["before-upgrade", "rp-before"],
        [`${OFF} checkpoints`]: [],
        [`${OFF} image snapshots`]: ["before-upgrade", "rp-before"],
        [`${OFF} state`]: "shut off",
        [`${RUN} snapshots`]: [],
        [`${RUN} checkpoints`]: [BYSTANDER, "ckpt-before"],
        [`${RUN} image snapshots`]: [],
        [`${RUN} state`]: "running",
        [`${IDLE} snapshots`]: [BYSTANDER, "rp-before"],
        [`${IDLE} checkpoints`]: [],
        [`${IDLE} image snapshots`]: [BYSTANDER, "rp-before"],
        [`${IDLE} state`]: "running",
    };

    async function exported(stack: CliStack = s, showSecrets = false): Promise<Exported> {
        const r = await stack.cli(["stack", "export", "--stack", stack.stack, ...(showSecrets ? ["--show-secrets"] : [])]);
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout) as Exported;
    }
    const byName = (e: Exported, name: string) => e.deployment.resources?.find((r) => r.urn.endsWith(`::${name}`));
    const resourcesOf = (e: Exported) => (e.deployment.resources ?? []).filter((r) => !r.type.startsWith("pulumi:"));

    /** A fresh stack, made and configured by a first CLI run; its secrets provider (`pulumi stack export` shows it). */
    async function freshStack(project: string): Promise<{ stack: CliStack; secretsProviders: { type: string; state: unknown } }> {
        const stack = new CliStack(project, lab.name);
        stacks.push(stack);
        const empty = await stack.ok("export", { resources: [] });
        const dep = (empty.deployment as Exported).deployment;
        assert.deepEqual(dep.resources ?? [], [], "a fresh stack holds nothing");
        assert.equal(dep.secrets_providers?.type, "passphrase");
        return { stack, secretsProviders: dep.secrets_providers };
    }

    /** The stack's config as `pulumi config --json --show-secrets` gives it (kept in memory, never printed). */
    async function stackConfig(stack: CliStack): Promise<Record<string, { value: string; secret?: boolean }>> {
        const r = await stack.cli(["config", "--json", "--show-secrets", "--stack", stack.stack]);
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout) as Record<string, { value: string; secret?: boolean }>;
    }

    async function importInto(stack: CliStack, deployment: Deployment): Promise<void> {
        const file = path.join(stack.dir, "import.json");
        fs.writeFileSync(file, JSON.stringify(deployment), { mode: 0o600 });
        try {
            const r = await stack.cli(["stack", "import", "--stack", stack.stack, "--file", file]);
            assert.equal(r.code, 0, `pulumi stack import failed:\n${r.stdout}\n${r.stderr}`);
            assert.match(r.stdout, /Import complete\./);
        } finally {
            fs.rmSync(file, { force: true });
        }
    }

    /** Neither the state file on disk nor `pulumi stack export` holds a lab secret or the stack's passphrase in plain text. */
    async function assertNoPlainSecrets(stack: CliStack): Promise<void> {
        const secrets: Array<[string, string]> = [...labSecrets(), ["the stack's passphrase", stack.passphrase]];
        const onDisk = fs.readFileSync(stack.stateFile, "utf8");
        const exportText = (await stack.cli(["stack", "export", "--stack", stack.stack])).stdout;
        assert.deepEqual(findLeaks(onDisk, secrets), [], "the state file on disk holds these in plain text");
        assert.deepEqual(findLeaks(exportText, secrets), [], "pulumi stack export holds these in plain text");
        assert.doesNotMatch(onDisk + exportText, /PRIVATE KEY/);
    }

    before(async function () {
        const cli = pulumiCli(lab);
        console.log(`      the CLI: ${cli.bin} ${cli.version}; the recording: ${rec().version} on ${rec().host ?? DEFAULT_HOST}`);
        domains = await upgradeDomains();
        await recreateHostObjects();
        await virshOk(["snapshot-create-as", "--domain", IDLE, "--name", BYSTANDER, "--description", "not in any state"]);
        await virshOk(["checkpoint-create-as", "--domain", RUN, "--name", BYSTANDER, "--description", "not in any state"]);
    });

    after(async function () {
        for (const st of stacks)
            console.log(`      ${st.project}: ${st.timings.map((t) => `${t.op} ${(t.ms / 1000).toFixed(1)} s`).join(", ")}`);
        for (const d of domains) await d.dispose().catch(() => undefined);
        // A failed run keeps its stacks' folders for a look.
        if (passed === this.test?.parent?.tests.length) for (const st of stacks) st.dispose();
    });
    afterEach(function () {
        if (this.currentTest?.state === "passed") passed++;
    });

    it("pulumi stack import takes the converted deployment: the stack, the default provider with the stack's config, each resource with its type, id, dependencies and the recorded shim; no secret in plain text", async function () {
        const fresh = await freshStack("upgrade-cli");
        s = fresh.stack;
        // The recording on the Debian 12 host used local virsh (its stack named no host): so does this stack.
        if (lab.local) {
            const keys = ["host", "port", "user", "hostKey", "privateKey"].map((k) => `libvirt-snapshots:${k}`);
            const r = await s.cli(["config", "rm-all", "--stack", s.stack, ...keys]);
            assert.equal(r.code, 0, r.stderr);
        }
        const config = await stackConfig(s);
        assert.deepEqual(
            Object.keys(config).sort(),
            lab.local ? [] : ["host", "hostKey", "port", "privateKey", "user"].map((k) => `libvirt-snapshots:${k}`),
        );
        const before = await onHost();
        assert.deepEqual(before, WITH_STATE, "the host holds what the recorded state describes");

        await importInto(s, toDeployment(rec(), { project: s.project, stack: s.stack, secretsProviders: fresh.secretsProviders, config }));

        const e = await exported();
        assert.deepEqual(
            (e.deployment.resources ?? []).map((r) => [r.urn, r.type]),
            [
                [stackUrn(s), STACK_TYPE],
                [defaultProviderUrn(s), NODEJS_PROVIDER_TYPE],
                ...rec().resources.map((r) => {
                    const u = urnOf(s, { kind: r.type as UpgradeType, name: r.name });
                    return [u, u.split("::")[2]];
                }),
            ],
        );
        const provider = byName(e, "default")!;
        for (const r of rec().resources) {
            const got = byName(e, r.name)!;
            assert.equal(got.id, r.id, r.name);
            assert.equal(got.provider, `${defaultProviderUrn(s)}::${provider.id}`, r.name);
            assert.equal(got.inputs?.[PROVIDER_KEY], r.inputs[PROVIDER_KEY], `${r.name}: the recorded shim, unchanged`);
            assert.equal(got.outputs?.[PROVIDER_KEY], r.outs[PROVIDER_KEY], `${r.name}: the recorded shim, unchanged`);
            assert.deepEqual(got.inputs, r.inputs, `${r.name}: the recorded inputs`);
            assert.deepEqual(got.outputs, r.outs, `${r.name}: the recorded outputs`);
        }
        assert.deepEqual(byName(e, "revert")?.dependencies, [urnOf(s, { kind: "DomainSnapshot", name: "snap" })]);
        assert.deepEqual(byName(e, "rp")?.dependencies, [urnOf(s, { kind: "SnapshotRevert", name: "revert" })]);
        // The stack's config is the provider's: plain values as they are, the private key as ciphertext.
        // (The CLI leaves out an empty map: the Debian 12 stack has no config.)
        for (const side of [provider.inputs ?? {}, provider.outputs ?? {}]) {
            assert.deepEqual(Object.keys(side).sort(), Object.keys(config).sort());
            for (const [k, c] of Object.entries(config)) {
                if (!c.secret) assert.equal(side[k], c.value, k);
                else {
                    const v = side[k] as Record<string, unknown>;
                    assert.ok(
                        v[SECRET_SIG_KEY] === SECRET_SIG && typeof v.ciphertext === "string" && !("plaintext" in v),
                        `${k} is not ciphertext`,
                    );
                }
            }
        }
        await assertNoPlainSecrets(s);
        assert.deepEqual(await onHost(), before, "import touched the host");
    });

    it("pulumi refresh keeps every resource by its id, and the recorded shim is what ran it; only outputs change, as REFRESHED says", async function () {
        const { r, reads } = await withGrpcLog(s, async (log) => {
            const r = await s.ok("refresh", PROGRAM, { debugGrpcLog: log });
            return { r, reads: providerCalls(log, "Read") };
        });
        console.log(
            `      refresh: ${JSON.stringify(r.changeSummary)}; changed outputs: ${JSON.stringify(Object.fromEntries(r.steps.map((x) => [x.name, x.changedOutputs])))}`,
        );
        // The engine reports the stack, the provider and the four resources as the same: no resource is dropped or replaced.
        assert.deepEqual(r.changeSummary, { same: 5 });
        assert.deepEqual(stepOps(r), { snap: "refresh", ckpt: "refresh", revert: "refresh", rp: "refresh" });
        // The ABI guard: the engine sent each resource's recorded 0.1.0 shim text to the provider to read with.
        assert.deepEqual(sorted(reads.map((x) => String(x.urn).split("::").pop()!)), sorted(Object.keys(REFRESHED)));
        for (const read of reads) {
            const name = String(read.urn).split("::").pop()!;
            const props = read.properties as Record<string, unknown>;
            const inputs = read.inputs as Record<string, unknown>;
            assert.ok(props[PROVIDER_KEY] === recorded(name).outs[PROVIDER_KEY], `${name}: Read got another shim than the recorded one`);
            assert.ok(inputs[PROVIDER_KEY] === recorded(name).inputs[PROVIDER_KEY], `${name}: Read's inputs hold another shim`);
            assert.equal(read.id, recorded(name).id, name);
        }

        afterRefresh = await exported();
        for (const [name, want] of Object.entries(REFRESHED)) {
            const got = byName(afterRefresh, name);
            assert.ok(got, `refresh dropped ${name} from the state`);
            const was = recorded(name);
            assert.equal(got.id, was.id, name);
            assert.deepEqual(got.inputs, was.inputs, `${name}: refresh changed inputs`);
            assert.ok(got.outputs?.[PROVIDER_KEY] === was.outs[PROVIDER_KEY], `${name}: the state's shim is no longer the recorded one`);
            const paths = changedPaths(was.outs, got.outputs);
            const added = paths.filter((p) => valueAt(was.outs, p) === undefined);
            const lost = paths.filter((p) => valueAt(got.outputs, p) === undefined);
            const changed = paths.filter((p) => !added.includes(p) && !lost.includes(p));
            assert.deepEqual({ added: sorted(added), changed: sorted(changed), lost }, { ...want, lost: [] }, name);
            // What the engine itself reported as changed: the same top-level keys.
            const step = r.steps.find((x) => x.name === name)!;
            assert.deepEqual(sorted(step.changedOutputs ?? []), sorted(new Set(paths.map((p) => p.split(/[.[]/)[0]!))), name);
        }
        assert.deepEqual(await onHost(), WITH_STATE, "refresh changed the host");
    });

    it("pulumi up with today's program: the same resources, no change to any (the diff ignores the new shim text); the state takes today's shim as input and keeps the outputs", async function () {
        const r = await s.ok("up", PROGRAM);
        assert.deepEqual(stepOps(r), { snap: "same", ckpt: "same", revert: "same", rp: "same" });
        assert.deepEqual(r.changeSummary, { same: 5 });
        const e = await exported();
        for (const u of UPGRADE_RESOURCES) {
            const got = byName(e, u.name)!;
            const was = byName(afterRefresh, u.name)!;
            assert.equal(got.id, was.id, u.name);
            // A same step records the program's inputs (today's shim among them: what registered them) and keeps the outputs.
            const { [PROVIDER_KEY]: shimIn, ...inputs } = got.inputs!;
            const { [PROVIDER_KEY]: _, ...recordedInputs } = was.inputs!;
            assert.ok(shimIn === shimOf(u.type), `${u.name}: the input shim is not today's (test/fixtures/shims/current)`);
            assert.notEqual(
                shimIn,
                recorded(u.name).inputs[PROVIDER_KEY],
                `${u.name}: today's shim text is 0.1.0's: this test no longer tells them apart`,
            );
            // Today's DomainSnapshot, DomainCheckpoint and RestorePoint also record their URN (provider/moments/maker.ts).
            const maker = ["DomainSnapshot", "DomainCheckpoint", "RestorePoint"].includes(u.type) ? { __maker: got.urn } : {};
            assert.deepEqual(inputs, { ...recordedInputs, ...maker }, `${u.name}: the inputs other than the shim, and the URN`);
            assert.deepEqual(got.outputs, was.outputs, `${u.name}: up changed outputs`);
            assert.deepEqual(got.dependencies ?? [], was.dependencies ?? [], u.name);
            // The engine writes what today's class registers: the same secret outputs the converter wrote (SECRET_KEYS).
            assert.deepEqual(got.additionalSecretOutputs, was.additionalSecretOutputs, `${u.name}: additionalSecretOutputs`);
        }
        assert.deepEqual(await onHost(), WITH_STATE, "up changed the host");
    });

    it("pulumi destroy removes exactly what the state held, dependents first, with the recorded shim; the bystanders and the domains stay as they were", async function () {
        const state = await exported();
        const held = sorted(resourcesOf(state).flatMap((x) => objectsOf(x.type, x.outputs ?? {})));
        const before = await objectsOnHost();
        const { r, deletes } = await withGrpcLog(s, async (log) => {
            const r = await s.ok("destroy", PROGRAM, { debugGrpcLog: log });
            return { r, deletes: providerCalls(log, "Delete") };
        });
        assert.deepEqual(stepOps(r), { snap: "delete", ckpt: "delete", revert: "delete", rp: "delete" });
        assert.deepEqual(r.changeSummary, { delete: 5 });
        const order = r.steps.map((x) => x.name);
        assert.ok(
            order.indexOf("rp") < order.indexOf("revert") && order.indexOf("revert") < order.indexOf("snap"),
            `delete order: ${order.join(", ")}`,
        );
        // up kept the outputs, so the shim that deletes is still 0.1.0's.
        assert.deepEqual(sorted(deletes.map((x) => String(x.urn).split("::").pop()!)), sorted(Object.keys(REFRESHED)));
        for (const d of deletes) {
            const name = String(d.urn).split("::").pop()!;
            assert.ok(
                (d.properties as Record<string, unknown>)[PROVIDER_KEY] === recorded(name).outs[PROVIDER_KEY],
                `${name}: Delete got another shim`,
            );
        }
        const after = await objectsOnHost();
        assert.deepEqual(sorted(before.filter((o) => !after.includes(o))), held, "destroy removed other than what the state held");
        assert.deepEqual(after, [`${IDLE} snapshot ${BYSTANDER}`, `${RUN} checkpoint ${BYSTANDER}`]);
        assert.deepEqual(await onHost(), {
            ...WITH_STATE,
            [`${OFF} snapshots`]: [],
            [`${OFF} image snapshots`]: [],
            [`${RUN} checkpoints`]: [BYSTANDER],
            [`${IDLE} snapshots`]: [BYSTANDER],
            [`${IDLE} image snapshots`]: [BYSTANDER],
        });
        assert.deepEqual((await exported()).deployment.resources ?? [], [], "the state still holds resources");
    });

    it("a record that holds a secret (a resource's connection with its private key): the import keeps it secret, encrypted with the stack's key", async function () {
        const { stack, secretsProviders } = await freshStack("upgrade-cli-secret");
        const key = fs.readFileSync(lab.privateKeyPath, "utf8");
        const connection = { host: lab.host, port: lab.port, user: lab.user, hostKey: lab.hostKey, privateKey: key };
        const withConnection: RecordedState = {
            ...rec(),
            resources: rec().resources.map((r) =>
                r.name === "snap" ? { ...r, inputs: { ...r.inputs, connection }, outs: { ...r.outs, connection } } : r,
            ),
        };
        await importInto(
            stack,
            toDeployment(withConnection, {
                project: stack.project,
                stack: stack.stack,
                secretsProviders,
                config: await stackConfig(stack),
            }),
        );
        await assertNoPlainSecrets(stack);
        const snap = byName(await exported(stack), "snap")!;
        for (const side of [snap.inputs!, snap.outputs!]) {
            const c = side.connection as Record<string, unknown>;
            assert.ok(c[SECRET_SIG_KEY] === SECRET_SIG && typeof c.ciphertext === "string", "connection is not ciphertext");
        }
        // It decrypts to what was given: encrypted with this stack's key, not lost.
        const shown = byName(await exported(stack, true), "snap")!;
        for (const side of [shown.inputs!, shown.outputs!]) {
            const c = side.connection as Record<string, unknown>;
            assert.ok(
                util.isDeepStrictEqual(JSON.parse(String(c.plaintext)), connection),
                "the connection does not decrypt to what was imported",
            );
        }
    });
});
