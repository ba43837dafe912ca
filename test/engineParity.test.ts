// The harness, checked against the engine (issue #22). The same scenarios run twice, each on a shut-off domain of its
// own: through the real Pulumi CLI, whose calls to the dynamic provider are recorded with PULUMI_DEBUG_GRPC
// (test/support/grpc-record.ts), and through test/harness/engine.ts's preview/up/change/refresh/destroy, which most
// suites use as the fast path. Per step, the two sequences of calls must be the same: the methods in order and, per
// call, the request's and the response's fields and property names (test/support/grpcShape.ts; never a value). What
// the engine does and the harness can't or needn't is listed below, each with its reason; anything else fails.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import { DomainSnapshotProvider } from "pulumi-libvirt-snapshots";
import { EngineHarness, PACKAGE_ROOT, dynamicType, secret, type ResourceState } from "./harness/engine";
import { recordProviderCalls } from "./support/grpc-record";
import { fieldOf, formatCall, type CallShape } from "./support/grpcShape";
import { snapshotNames } from "./support/helpers";
import { loadLab, makeDomain, virshOk, type TestDomain } from "./support/lab";
import { CliStack, labStackConfig, pulumiCli, urnOf, type Op, type ProgramSpec } from "./support/pulumiCli";

const lab = loadLab();
const PREFIX = "labparity-";
const NAME = "parity-snap";
const TYPE = dynamicType("libvirt-snapshots", "DomainSnapshot");

/**
 * Calls the engine makes and the harness doesn't, with why that is harmless. `answer` is what the engine's record
 * must show the server answered: "error" for the methods the dynamic-provider server leaves unimplemented (it
 * answers UNIMPLEMENTED and does nothing; the engine falls back), or the response's fields.
 */
const ENGINE_ONLY_CALLS: Record<string, { answer: "error" | string[]; why: string }> = {
    Handshake: {
        answer: "error",
        why: "the engine offers the plugin a handshake first; the server has none and the engine goes on with Configure",
    },
    GetPluginInfo: {
        answer: ["version"],
        why: "the engine asks the plugin's version for its logs and the state; the server only reads its own package.json",
    },
    CheckConfig: {
        answer: "error",
        why: "the engine checks the default provider's config; the server has no CheckConfig and the engine keeps the config as it is",
    },
    DiffConfig: {
        answer: "error",
        why: "the engine diffs the default provider's old and new config; the server has none and the provider is never replaced for it",
    },
    Cancel: {
        answer: [],
        why: "the engine tells the plugin the operation is over before it stops it; the server's cancel does nothing, and the harness stops its server in close()",
    },
};

/**
 * Request fields the engine sets and the harness doesn't, by method, with why that is harmless. The dynamic-provider
 * server (@pulumi/pulumi/cmd/dynamic-provider/index.js) reads only Configure's `args`, Check's `olds` and `news`,
 * Diff's `id`, `olds` and `news`, Create's `properties`, Read's `id` and `properties`, Update's `id`, `olds` and
 * `news`, and Delete's `id` and `properties`.
 */
const RESOURCE_STATUS =
    "the address and token of the engine's resource-status service, for a provider that reports progress; the harness runs no such service, and the server reads neither";
const ENGINE_ONLY_FIELDS: Record<string, Record<string, string>> = {
    Create: { resourcestatusaddress: RESOURCE_STATUS, resourcestatustoken: RESOURCE_STATUS },
    Read: { resourcestatusaddress: RESOURCE_STATUS, resourcestatustoken: RESOURCE_STATUS },
    Update: { resourcestatusaddress: RESOURCE_STATUS, resourcestatustoken: RESOURCE_STATUS },
    Delete: { resourcestatusaddress: RESOURCE_STATUS, resourcestatustoken: RESOURCE_STATUS },
};

/** The entries of the two lists above that this run saw, so that one that no longer happens is noticed too. */
const seen = new Set<string>();

/**
 * The engine's calls in one CLI operation, as the harness would make them: the engine-only calls and fields dropped
 * (each checked against what the list says), and Configure set apart (the engine starts the plugin afresh for every
 * operation; the harness configures its server once, when it starts).
 */
function comparable(engine: CallShape[]): { calls: CallShape[]; configure: CallShape[] } {
    const calls: CallShape[] = [];
    const configure: CallShape[] = [];
    for (const c of engine) {
        const only = ENGINE_ONLY_CALLS[c.method];
        if (only) {
            assert.deepEqual(
                c.response,
                only.answer,
                `the engine's ${c.method}: the server answered ${JSON.stringify(c.response)}, not ${JSON.stringify(only.answer)}`,
            );
            seen.add(c.method);
            continue;
        }
        const fields = ENGINE_ONLY_FIELDS[c.method] ?? {};
        const request = c.request.filter((f) => {
            if (!(fieldOf(f) in fields)) return true;
            seen.add(`${c.method}.${fieldOf(f)}`);
            return false;
        });
        (c.method === "Configure" ? configure : calls).push({ ...c, request });
    }
    return { calls, configure };
}

describe(`the harness makes the engine's calls to the dynamic provider (${lab.name})`, function () {
    this.timeout(240_000);
    this.slow(30_000);
    let s: CliStack;
    let engine: EngineHarness;
    let cliDom: TestDomain, harnessDom: TestDomain;
    /** The harness's state of the resource, as the steps leave it (set as soon as the harness returns it). */
    let state: ResourceState | undefined;
    /** The engine's Configure of every operation, for the last test. */
    const engineConfigures: Array<{ title: string; calls: CallShape[] }> = [];
    const t0 = Date.now();
    const report: string[] = [];

    const program = (args: Record<string, unknown>): ProgramSpec => ({
        resources: [{ kind: "DomainSnapshot", name: NAME, args: { domain: cliDom.name, ...args } }],
    });
    /** What DomainSnapshot's constructor registers for these args (provider/index.ts: the name as snapshotName, the URN as __maker). */
    const inputs = (args: Record<string, unknown>) => ({
        domain: harnessDom.name,
        snapshotName: NAME,
        __maker: urnOf(s, { kind: "DomainSnapshot", name: NAME }),
        ...args,
    });
    const current = (): ResourceState => {
        if (!state) throw new Error("an earlier step left the harness no resource");
        return state;
    };

    before(async function () {
        pulumiCli(lab); // no CLI is a failure with the lab's reason, never a skip
        [cliDom, harnessDom] = await Promise.all([makeDomain({ prefix: PREFIX }), makeDomain({ prefix: PREFIX })]);
        s = new CliStack("engine-parity", lab.name);
        // The harness's server gets the stack config the CLI's program is given.
        const config: Record<string, string> = {};
        const secretConfig: Record<string, string> = {};
        for (const [k, v] of Object.entries(labStackConfig(lab, fs.readFileSync(lab.privateKeyPath, "utf8"))))
            ("secret" in v && v.secret ? secretConfig : config)[k] = v.value;
        engine = await EngineHarness.start({ cwd: PACKAGE_ROOT, project: s.project, stack: s.stack, config, secretConfig });
    });

    after(async function () {
        await engine?.close();
        for (const d of [cliDom, harnessDom]) await d?.dispose().catch(() => undefined);
        s?.dispose();
        console.log(`      the engine's calls, by step:\n${report.join("\n")}`);
        console.log(`      the parity suite on ${lab.name}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    });

    /**
     * One scenario step: OP of PROGRAM through the CLI, then HARNESS through the harness; their calls must be the same
     * (Configure apart: see the last test). Returns what the harness step returned.
     */
    async function step<T>(title: string, op: Op, prog: ProgramSpec, harness: () => Promise<T>): Promise<T> {
        const { calls: recorded } = await recordProviderCalls(s, op, prog);
        const from = engine.calls.length;
        const result = await harness();
        const made = engine.calls.slice(from);
        const { calls, configure } = comparable(recorded);
        engineConfigures.push({ title, calls: configure });
        report.push(`      ${title}: ${recorded.map((c) => c.method).join(", ")}`);
        assert.deepEqual(
            made.map(formatCall),
            calls.map(formatCall),
            `${title}: the harness's calls (actual) differ from the engine's (expected)`,
        );
        // The same effect on the host: the same snapshots on either domain.
        assert.deepEqual(await snapshotNames(harnessDom.name), await snapshotNames(cliDom.name), `${title}: the snapshots differ`);
        return result;
    }

    it("preview of a create: Check only", async function () {
        await step("preview of a create", "preview", program({ description: "one" }), () =>
            engine.preview(NAME, DomainSnapshotProvider, inputs({ description: "one" }), { type: TYPE }),
        );
        assert.deepEqual(await snapshotNames(cliDom.name), []);
    });

    it("create: Check, Create", async function () {
        await step("up: create", "up", program({ description: "one" }), async () => {
            state = await engine.up(NAME, DomainSnapshotProvider, inputs({ description: "one" }), { type: TYPE });
        });
        assert.deepEqual(await snapshotNames(cliDom.name), [NAME]);
    });

    it("update in place (description): Check, Diff, Update", async function () {
        const r = await step("up: description, update in place", "up", program({ description: "two" }), async () => {
            const r = await engine.change(current(), DomainSnapshotProvider, inputs({ description: "two" }));
            state = r.state;
            return r;
        });
        assert.equal(r.op, "update");
        const xml = await virshOk(["snapshot-dumpxml", "--domain", cliDom.name, "--snapshotname", NAME]);
        assert.match(xml, /<description>two<\/description>/);
    });

    it("refresh with no drift: Read, then Diff", async function () {
        const r = await step("refresh, no drift", "refresh", program({ description: "two" }), async () => {
            const r = await engine.refreshStep(current());
            state = r.state;
            return r;
        });
        assert.ok(r.state, "the harness's refresh dropped the snapshot");
        assert.equal(r.diff?.changes, "none");
    });

    it("replace with deleteBeforeReplace (atomic changed): Check, Diff, Check, Delete, Create", async function () {
        const args = { description: "two", atomic: false };
        const r = await step("up: atomic, replace (deleteBeforeReplace)", "up", program(args), async () => {
            const r = await engine.change(current(), DomainSnapshotProvider, inputs(args));
            state = r.state;
            return r;
        });
        assert.equal(r.op, "replace");
        assert.equal(r.diff.deleteBeforeReplace, true);
        assert.deepEqual(await snapshotNames(cliDom.name), [NAME]);
    });

    it("destroy: Delete", async function () {
        await step("destroy", "destroy", program({ description: "two", atomic: false }), async () => {
            await engine.destroy(current());
            state = undefined;
        });
        assert.deepEqual(await snapshotNames(cliDom.name), []);
    });

    it("refresh after the snapshot was deleted out of band: Read only", async function () {
        // Created again, with a connection of its own this time: the engine hands the server the inputs with their
        // secrets unwrapped (it says acceptSecrets=false), so the connection's fields are the property names it sees.
        const connection = { host: lab.host, port: lab.port, user: lab.user, hostKey: lab.hostKey };
        const privateKey = fs.readFileSync(lab.privateKeyPath, "utf8");
        const args = { description: "three", connection: "$connection" };
        await step("up: create again, with a connection input", "up", program(args), async () => {
            const own = inputs({ description: "three", connection: secret({ ...connection, privateKey }) });
            state = await engine.up(NAME, DomainSnapshotProvider, own, { type: TYPE });
        });
        // Deleted for real (not --metadata): libvirt's record and the qcow2 snapshot are both gone.
        for (const d of [cliDom, harnessDom]) await virshOk(["snapshot-delete", "--domain", d.name, "--snapshotname", NAME]);
        const r = await step("refresh, the snapshot deleted out of band", "refresh", program(args), async () => {
            const r = await engine.refreshStep(current());
            state = r.state;
            return r;
        });
        assert.equal(r.state, undefined, "the harness's refresh kept a snapshot that is gone");
        const checkpoint = JSON.parse(fs.readFileSync(s.stateFile, "utf8")) as {
            checkpoint: { latest: { resources?: Array<{ type: string }> } };
        };
        const types = (checkpoint.checkpoint.latest.resources ?? []).map((x) => x.type);
        assert.ok(!types.includes(TYPE), `the CLI's refresh kept it: ${types.join(", ")}`);
    });

    // The engine starts the plugin afresh for every operation and configures it each time; the harness configures
    // its server once, when it starts. Each of the engine's must be the harness's.
    it("Configure: the harness's, when its server starts, is the engine's of every operation", function () {
        const harness = engine.calls.filter((c) => c.method === "Configure").map(formatCall);
        assert.equal(harness.length, 1);
        assert.equal(engineConfigures.length, 8, "a step did not run");
        for (const { title, calls } of engineConfigures)
            assert.deepEqual(
                harness,
                calls.map(formatCall),
                `${title}: the harness's Configure (actual) differs from the engine's (expected)`,
            );
    });

    it("every difference the lists call inherent was seen (none of them is stale)", function () {
        const listed = [
            ...Object.keys(ENGINE_ONLY_CALLS),
            ...Object.entries(ENGINE_ONLY_FIELDS).flatMap(([m, fields]) => Object.keys(fields).map((f) => `${m}.${f}`)),
        ];
        assert.deepEqual(
            listed.filter((x) => !seen.has(x)),
            [],
        );
    });
});
