// Hostile input through the engine path. Every string of the corpus
// (test/support/hostile-corpus.ts) goes into every string input of every
// resource: the SDK serializes the real provider, @pulumi/pulumi's
// dynamic-provider server runs Check, and when Check accepts, Create and
// Delete run against real lab domains. Each one must be refused at check by a
// failure that names the input, or used literally: the snapshot, checkpoint,
// description or file that libvirt reports back is exactly the string given.
// Afterwards no canary file exists, our domains and the lab's hold nothing
// extra, and a virsh wrapper's log shows that virsh only ever got the options
// the provider meant to give it.
import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DomainCheckpointProvider, DomainSnapshotProvider, RestorePointProvider, SnapshotRevertProvider } from "pulumi-libvirt-snapshots";
import { PACKAGE_ROOT, dynamicType, type Props, type ResourceState } from "./harness/engine";
import { engineSuite } from "./support/fixture";
import { disposeAllTestDomains, loadLab, qemuImgInfo, qemuIoRead, qemuIoWrite, sleep, virshLocal, type TestDomain } from "./support/lab";
import { xmlEscape } from "./support/xml";
import {
    argvProblems,
    checkpointList,
    checkpointShapeProblems,
    defineHostileDomain,
    diskSource,
    dropRunLock,
    type HostileDomain,
    type Provider,
    qcow2Snapshots,
    readVirshLog,
    removeStaleHostileDomains,
    SESSION_READ_ONLY,
    SESSION_WRITES,
    show,
    snapshotList,
    snapshotShapeProblems,
    takeRunLock,
    undefineByUuid,
    virshWrapper,
    virshOk,
    wire,
} from "./support/hostile";
import { hostXmlFiles, limiter, sshConnection } from "./support/helpers";
import { installVirshWrapper, type VirshWrapper } from "./support/virshWrapper";
import { RELATIVE_CANARY_PREFIX, hostileCorpus, type HostileEntry } from "./support/hostile-corpus";

const lab = loadLab();
const MODULE = "libvirt-snapshots";
/**
 * scripts/test.sh sets HOSTILE_SAMPLE=N on every host after the first, to keep CI's time: there every
 * shell and quote entry runs (what a remote shell could misread) and every Nth entry of each other group.
 * Validation is the same code on every host; the first host runs the whole corpus.
 */
const SAMPLE = Math.max(1, Math.floor(Number(process.env.HOSTILE_SAMPLE ?? 1)) || 1);
const sampled = (all: HostileEntry[]) =>
    SAMPLE === 1 ? all : all.filter((e) => /^(shell|quote)-/.test(e.id) || (Number(e.id.split("-").pop()) - 1) % SAMPLE === 0);
const TYPE = {
    snapshot: dynamicType(MODULE, "DomainSnapshot"),
    restorePoint: dynamicType(MODULE, "RestorePoint"),
    checkpoint: dynamicType(MODULE, "DomainCheckpoint"),
    revert: dynamicType(MODULE, "SnapshotRevert"),
};

// ---- specs: one per string input -------------------------------------------------------------

interface Lane {
    index: number;
    doms: TestDomain[];
}

interface Spec {
    /** e.g. "DomainSnapshot.snapshotName (ssh)" */
    input: string;
    type: string;
    provider: Provider;
    /** The properties a refusal may name. */
    properties: string[];
    /** Failures found on the host that name the connection; their reason must quote the value. */
    hostProperties?: string[];
    lanes: number | TestDomain[][];
    /** The entries this spec takes (default: all). */
    only?(e: HostileEntry): boolean;
    build(e: HostileEntry, lane: Lane): Props;
    /** Create from the checked inputs, prove literal use, delete, prove it is gone. Absent: acceptance is a problem. */
    use?(e: HostileEntry, lane: Lane, checked: Props, urn: string): Promise<void>;
}

interface Tally {
    tried: number;
    refused: number;
    refusedAtHost: number;
    literal: number;
    failed: number;
}

describe("hostile input (engine path, real lab)", function () {
    this.timeout(600_000);
    let corpus: HostileEntry[];
    let canaryDir: string;
    let wrapper: VirshWrapper;
    const token = crypto.randomBytes(4).toString("hex");
    let victim: TestDomain;
    const hostileDomains = new Map<string, HostileDomain>();
    const tallies = new Map<string, Tally>();
    const timings: Array<[string, number]> = [];
    const declared = { uris: new Set<string>(["qemu:///system"]), domains: new Set<string>(), names: new Set<string>() };
    /**
     * A URI holding an unpaired surrogate has no UTF-8 form: were it let through, virsh
     * would get U+FFFD in its place. connection.ts refuses such URIs at check, so any
     * such rendering in the virsh log is a problem.
     */
    const mangledUris = new Set<string>();
    const declareUri = (u: string) => {
        declared.uris.add(wire(u));
        const rendered = Buffer.from(wire(u), "utf8").toString("utf8");
        if (rendered !== wire(u)) mangledUris.add(rendered);
        return u;
    };
    const labBefore = new Map<string, { snapshots: string[]; checkpoints: string[] }>();
    const slots = limiter(20);

    const declareDomain = (d: string) => {
        declared.domains.add(wire(d));
        return d;
    };
    const declareName = (n: string) => {
        declared.names.add(wire(n));
        return n;
    };

    before(async function () {
        this.timeout(1_800_000);
        const tLock = Date.now();
        await takeRunLock(1_500_000);
        if (Date.now() - tLock > 5000)
            console.log(`      waited ${((Date.now() - tLock) / 1000).toFixed(0)} s for another run of this suite`);
        const t0 = Date.now();
        await removeStaleHostileDomains();
        await disposeAllTestDomains({ prefix: "labtmp-hostile-" });
        // A host in its own root sees the lab folder at the same path, and not this machine's /tmp.
        canaryDir = fs.mkdtempSync(path.join(lab.rootDir ? lab.labDir : os.tmpdir(), "hostile-canary-"));
        wrapper = installVirshWrapper(virshWrapper);
        declareUri(wrapper.uri);
        for (const d of lab.domains) {
            labBefore.set(d.name, { snapshots: await snapshotList(d.name), checkpoints: await checkpointList(d.name) });
        }
        victim = (await fresh(1, true))[0]!;
        const victimId = Number((await virshOk(["domid", "--domain", victim.uuid])).trim());
        const all = hostileCorpus({ canaryDir, token, runningDomainId: victimId });
        corpus = sampled(all);
        // A domain named after each entry, where libvirt takes the name: the domain input can then prove literal use.
        const defineSlots = limiter(6);
        await Promise.all(
            corpus.map((e) =>
                defineSlots(async () => {
                    const hd = await defineHostileDomain(e.value);
                    if (hd) {
                        hostileDomains.set(e.id, hd);
                        declareDomain(hd.uuid);
                    }
                }),
            ),
        );
        timings.push(["setup (domains, hostile-named domains)", Date.now() - t0]);
        console.log(
            `      corpus: ${corpus.length} strings${SAMPLE > 1 ? ` (HOSTILE_SAMPLE=${SAMPLE}: every shell and quote entry, every ${SAMPLE}th of the rest, of ${all.length})` : ""}; ${hostileDomains.size} of them accepted by libvirt as domain names; running domain id used as a trap: ${victimId}`,
        );
    });

    // Registered after the setup hook, so the server starts with the wrapper on its PATH.
    const suite = engineSuite("labtmp-hostile-", () => wrapper.server);

    after(async function () {
        this.timeout(300_000);
        const undef = limiter(6);
        await Promise.all(
            [...hostileDomains.values()].map((hd) =>
                undef(async () => {
                    await undefineByUuid(hd.uuid).catch(() => undefined);
                    fs.rmSync(hd.dir, { recursive: true, force: true });
                }),
            ),
        );
        if (canaryDir) fs.rmSync(canaryDir, { recursive: true, force: true });
        wrapper?.dispose();
        dropRunLock();
        if (tallies.size) {
            const sum: Tally = { tried: 0, refused: 0, refusedAtHost: 0, literal: 0, failed: 0 };
            for (const t of tallies.values()) for (const f of Object.keys(sum) as Array<keyof Tally>) sum[f] += t[f];
            console.log(`      hostile strings × inputs, all resources: ${row("total", sum)}`);
            if (connectionRetries)
                console.log(
                    `      ${connectionRetries} idempotent call(s) (check, delete) repeated after another test run dropped the SSH connection`,
                );
            console.log(`      timings: ${timings.map(([k, ms]) => `${k} ${(ms / 1000).toFixed(1)} s`).join("; ")}`);
        }
    });

    const row = (k: string, t: Tally) =>
        `${k}: tried ${t.tried}, refused at check ${t.refused + t.refusedAtHost} ` +
        `(${t.refused} by validation, ${t.refusedAtHost} after asking the host), used literally ${t.literal}, failed ${t.failed}`;

    /** Throwaway domains for one test; the final test checks them all, after() removes them. */
    async function fresh(n: number, running = false): Promise<TestDomain[]> {
        const ds = await suite.newDomains(n, { running });
        for (const d of ds) {
            declareDomain(d.name);
            declareDomain(d.uuid);
        }
        return ds;
    }

    // ---- running a spec ----

    /**
     * Other test runs kill SSH sessions on this lab (the faults suite). Delete and
     * check are idempotent, so a call that lost its connection is made once more,
     * as a user would run destroy again; each such retry is counted and printed.
     */
    let connectionRetries = 0;
    const LOST = /SSH connection .* was lost|connection to .* closed during the handshake|cannot connect to 127\.0\.0\.1/;
    async function again<T>(fn: () => Promise<T>): Promise<T> {
        try {
            return await fn();
        } catch (e) {
            if (!LOST.test((e as Error).message)) throw e;
            connectionRetries++;
            return fn();
        }
    }
    /** Check reports a lost connection as a failure naming 'connection': ask once more. */
    async function checkAgain(urn: string, news: Props) {
        const r = await suite.engine.check(urn, {}, news);
        if (!r.failures.some((f) => LOST.test(f.reason))) return r;
        connectionRetries++;
        return suite.engine.check(urn, {}, news);
    }
    const destroy = (s: ResourceState) => again(() => suite.engine.destroy(s));

    async function createChecked(urn: string, checked: Props): Promise<ResourceState> {
        const { id, outs } = await suite.engine.create(urn, checked);
        return { urn, id, inputs: checked, outs };
    }

    /** Create, check while it exists, destroy, check after; a check that fails first still destroys it. */
    async function createThenDestroy(
        urn: string,
        checked: Props,
        whileThere: (s: ResourceState) => Promise<void>,
        afterDestroy: () => Promise<void>,
    ): Promise<void> {
        const s = await createChecked(urn, checked);
        let deleted = false;
        try {
            await whileThere(s);
            await destroy(s);
            deleted = true;
            await afterDestroy();
        } finally {
            if (!deleted) await destroy(s).catch(() => undefined);
        }
    }

    async function runSpecs(specs: Spec[], label: string): Promise<string[]> {
        const t0 = Date.now();
        const problems: string[] = [];
        await Promise.all(specs.map((spec) => runSpec(spec, problems)));
        timings.push([label, Date.now() - t0]);
        for (const spec of specs)
            console.log(`      ${row(spec.input, tallies.get(spec.input)!)} (${((specTimes.get(spec.input) ?? 0) / 1000).toFixed(1)} s)`);
        console.log(`      ${label}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        return problems;
    }

    /**
     * A problem is printed as it is found, so a run that ends in a timeout still names its first failing input
     * and error; the test's assertion lists them all again at its end.
     */
    function problem(problems: string[], text: string): void {
        problems.push(text);
        console.log(`      problem: ${text}`);
    }
    /** Each attempt's bound, far below the tests' own: a provider call that never answers is one problem, not a stalled suite. */
    const ATTEMPT_MS = 120_000;
    async function bounded(fn: () => Promise<void>): Promise<void> {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`the attempt did not finish within ${ATTEMPT_MS / 1000} s`)), ATTEMPT_MS);
        });
        try {
            await Promise.race([fn(), late]);
        } finally {
            clearTimeout(timer);
        }
    }

    const specTimes = new Map<string, number>();
    async function runSpec(spec: Spec, problems: string[]): Promise<void> {
        const started = Date.now();
        const t: Tally = { tried: 0, refused: 0, refusedAtHost: 0, literal: 0, failed: 0 };
        tallies.set(spec.input, t);
        const lanes: Lane[] =
            typeof spec.lanes === "number"
                ? Array.from({ length: spec.lanes }, (_, index) => ({ index, doms: [] }))
                : spec.lanes.map((ds, index) => ({ index, doms: ds }));
        const entries = corpus.filter((e) => spec.only?.(e) ?? true);
        await Promise.all(
            lanes.map(async (lane) => {
                for (let i = lane.index; i < entries.length; i += lanes.length) {
                    const e = entries[i]!;
                    await slots(() =>
                        bounded(() => tryOne(spec, e, lane, t, problems)).catch((err: Error) => {
                            t.failed++;
                            problem(problems, `${spec.input} ← ${e.id} (${e.label}) ${show(e.value)}: ${err.message}`);
                        }),
                    );
                }
            }),
        );
        specTimes.set(spec.input, Date.now() - started);
    }

    async function tryOne(spec: Spec, e: HostileEntry, lane: Lane, t: Tally, problems: string[]): Promise<void> {
        t.tried++;
        const where = `${spec.input} ← ${e.id} (${e.label}) ${show(e.value)}`;
        const value = wire(e.value);
        try {
            const urn = suite.engine.urn(spec.type, `h-${e.id}-${lane.index}`);
            const news = await suite.engine.programInputs(spec.provider, spec.build(e, lane));
            const r = await checkAgain(urn, news);
            if (r.failures.length) {
                const named = r.failures.every((f) => spec.properties.includes(f.property));
                // The reason crossed gRPC once more, where an unpaired surrogate inside a string may be dropped.
                const bare = (x: string) => x.replace(/\p{Cs}/gu, "");
                const atHost = r.failures.every(
                    (f) => spec.hostProperties?.includes(f.property) && value !== "" && bare(f.reason).includes(bare(value)),
                );
                if (named) {
                    // A refusal found on the host (no such domain, disk, snapshot) quotes the value; validation does not.
                    if (value !== "" && r.failures.every((f) => f.reason.includes(value))) t.refusedAtHost++;
                    else t.refused++;
                    return;
                }
                if (atHost) {
                    t.refusedAtHost++;
                    return;
                }
                t.failed++;
                problem(
                    problems,
                    `${where}: refused, but not naming ${spec.properties.join(" or ")}: ${r.failures.map((f) => `${f.property}: ${f.reason}`).join("; ")}`,
                );
                return;
            }
            if (!spec.use) {
                t.failed++;
                problem(
                    problems,
                    `${where}: accepted at check, but it can't be used literally: expected a refusal naming ${spec.properties.join(" or ")}`,
                );
                return;
            }
            await spec.use(e, lane, r.inputs, urn);
            t.literal++;
        } catch (err) {
            t.failed++;
            problem(problems, `${where}: ${(err as Error).message.split("\n").slice(0, 8).join("\n      ")}`);
        }
    }

    const report = (problems: string[]) => assert.deepEqual(problems, [], `${problems.length} problem(s):\n  ${problems.join("\n  ")}`);

    /** An internal snapshot of a shut-off domain, created from checked inputs, checked and deleted. */
    async function internalSnapshotRoundTrip(
        urn: string,
        checked: Props,
        o: { uuid: string; disk: string; domainName: string; name: string; description?: string },
    ) {
        const s = await createChecked(urn, checked);
        let deleted = false;
        try {
            assert.equal(s.outs.snapshotName, o.name, "outputs: snapshotName");
            assert.equal(
                s.outs.domainUuid,
                o.uuid,
                `the snapshot was taken of domain ${show(String(s.outs.domainName))} (${s.outs.domainUuid}), not of ${show(o.domainName)}`,
            );
            if (o.description !== undefined) assert.equal(s.outs.description, o.description, "outputs: description");
            assert.deepEqual(await snapshotList(o.uuid), [o.name], "virsh snapshot-list --name shows exactly the name");
            assert.deepEqual(await qcow2Snapshots(o.disk), [o.name], "qemu-img info shows exactly the name");
            const xml = await virshOk(["snapshot-dumpxml", "--domain", o.uuid, "--snapshotname", o.name]);
            const bad = snapshotShapeProblems(xml, {
                name: o.name,
                description: o.description,
                domainName: o.domainName,
                memory: { snapshot: "no" },
                disks: [{ name: "vda", snapshot: "internal" }],
            });
            assert.deepEqual(bad, [], "snapshot XML as declared");
            await destroy(s);
            deleted = true;
            assert.deepEqual(await snapshotList(o.uuid), [], "gone from libvirt after delete");
            assert.deepEqual(await qcow2Snapshots(o.disk), [], "gone from qcow2 after delete (not a metadata-only delete)");
        } finally {
            if (!deleted) await destroy(s).catch(() => undefined);
        }
    }

    /** A path for a file input: absolute strings as they are, anything else inside the lane's own folder. */
    const fileIn = (dir: string, s: string) => (wire(s).startsWith("/") ? wire(s) : `${dir}/files/${wire(s)}`);

    function assertOurs(p: string, dir: string): void {
        assert.ok(
            p.startsWith(`${dir}/`) && !p.split("/").includes(".."),
            `accepted a path outside the test's folder, refusing to create it: ${show(p)}`,
        );
    }

    // ---- DomainSnapshot ---------------------------------------------------------------------------

    it("DomainSnapshot: every hostile string in every string input is refused naming it, or used literally", async function () {
        this.timeout(1_200_000);
        const ssh = sshConnection();
        const [off, running] = await Promise.all([fresh(17), fresh(4, true)]);
        const checkOnly = off[13]!;
        const specs: Spec[] = [
            {
                input: "DomainSnapshot.domain",
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["domain"],
                lanes: 6,
                build: (e) => ({ domain: declareDomain(e.value), snapshotName: declareName("hostile-domain") }),
                use: async (e, _lane, checked, urn) => {
                    const hd = hostileDomains.get(e.id);
                    if (!hd) {
                        const s = await createChecked(urn, checked);
                        await destroy(s);
                        assert.fail(
                            `accepted, though no domain is named this: the snapshot went to domain ${show(String(s.outs.domainName))} (${s.outs.domainUuid})`,
                        );
                    }
                    await internalSnapshotRoundTrip(urn, checked, {
                        uuid: hd.uuid,
                        disk: hd.disk,
                        domainName: hd.name,
                        name: "hostile-domain",
                    });
                },
            },
            ...(["local", "ssh"] as const).map((via, k): Spec => ({
                input: `DomainSnapshot.snapshotName (${via})`,
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["snapshotName"],
                lanes: [[off[3 * k]!], [off[3 * k + 1]!], [off[3 * k + 2]!]],
                build: (e, lane) => ({
                    ...(via === "ssh" ? { connection: ssh } : {}),
                    domain: lane.doms[0]!.name,
                    snapshotName: declareName(e.value),
                }),
                use: (e, lane, checked, urn) =>
                    internalSnapshotRoundTrip(urn, checked, {
                        uuid: lane.doms[0]!.uuid,
                        disk: lane.doms[0]!.disk,
                        domainName: lane.doms[0]!.name,
                        name: wire(e.value),
                    }),
            })),
            {
                input: "DomainSnapshot.description (ssh)",
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["description"],
                lanes: [[off[6]!], [off[7]!], [off[8]!]],
                build: (e, lane) => ({
                    connection: ssh,
                    domain: lane.doms[0]!.name,
                    snapshotName: declareName(`d-${e.id}`),
                    description: e.value,
                }),
                use: (e, lane, checked, urn) =>
                    internalSnapshotRoundTrip(urn, checked, {
                        uuid: lane.doms[0]!.uuid,
                        disk: lane.doms[0]!.disk,
                        domainName: lane.doms[0]!.name,
                        name: `d-${e.id}`,
                        description: wire(e.value),
                    }),
            },
            {
                input: "DomainSnapshot.memoryFile (ssh)",
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["memoryFile"],
                lanes: running.map((d) => [d]),
                build: (e, lane) => ({
                    connection: ssh,
                    domain: lane.doms[0]!.name,
                    snapshotName: declareName(`m-${e.id}`),
                    kind: "external",
                    memory: "external",
                    memoryFile: fileIn(lane.doms[0]!.dir, e.value),
                }),
                use: async (e, lane, checked, urn) => {
                    const dom = lane.doms[0]!;
                    const file = fileIn(dom.dir, e.value);
                    assertOurs(file, dom.dir);
                    fs.mkdirSync(path.dirname(file), { recursive: true });
                    let overlay = "";
                    await createThenDestroy(
                        urn,
                        checked,
                        async (s) => {
                            assert.equal(s.outs.memoryFile, file, "outputs: memoryFile");
                            assert.ok(fs.statSync(file).size > 0, "the memory file is where declared");
                            overlay = (s.outs.diskFiles as Record<string, string>).vda!;
                            const xml = await virshOk(["snapshot-dumpxml", "--domain", dom.uuid, "--snapshotname", `m-${e.id}`]);
                            assert.deepEqual(
                                snapshotShapeProblems(xml, {
                                    name: `m-${e.id}`,
                                    domainName: dom.name,
                                    memory: { snapshot: "external", file },
                                    disks: [{ name: "vda", snapshot: "external", file: overlay }],
                                }),
                                [],
                                "snapshot XML as declared",
                            );
                        },
                        async () => {
                            assert.equal(fs.existsSync(file), false, "the memory file is removed on delete");
                            assert.equal(fs.existsSync(overlay), false, "the overlay is merged and removed on delete");
                            assert.equal(await diskSource(dom.uuid, false), dom.disk, "the domain runs on its base image again");
                            assert.deepEqual(await snapshotList(dom.uuid), []);
                        },
                    );
                },
            },
            {
                input: "DomainSnapshot.disks[].name",
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["disks[0].name"],
                lanes: 3,
                build: (e) => ({
                    domain: checkOnly.name,
                    snapshotName: declareName("hostile-disk"),
                    disks: [{ name: e.value, snapshot: "internal" }],
                }),
            },
            {
                input: "DomainSnapshot.disks[].file",
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["disks[0].file"],
                lanes: [[off[9]!], [off[10]!], [off[11]!]],
                build: (e, lane) => ({
                    domain: lane.doms[0]!.name,
                    snapshotName: declareName(`f-${e.id}`),
                    kind: "external",
                    disks: [{ name: "vda", snapshot: "external", file: fileIn(lane.doms[0]!.dir, e.value) }],
                }),
                use: async (e, lane, checked, urn) => {
                    const dom = lane.doms[0]!;
                    const file = fileIn(dom.dir, e.value);
                    assertOurs(file, dom.dir);
                    fs.mkdirSync(path.dirname(file), { recursive: true });
                    await createThenDestroy(
                        urn,
                        checked,
                        async (s) => {
                            assert.deepEqual(s.outs.diskFiles, { vda: file }, "outputs: diskFiles");
                            assert.ok(fs.existsSync(file), "the overlay is where declared");
                            assert.equal((await qemuImgInfo(file))["backing-filename"], dom.disk, "the overlay sits on the base image");
                            assert.equal(await diskSource(dom.uuid, true), file, "the domain now uses the overlay");
                            const xml = await virshOk(["snapshot-dumpxml", "--domain", dom.uuid, "--snapshotname", `f-${e.id}`]);
                            assert.deepEqual(
                                snapshotShapeProblems(xml, {
                                    name: `f-${e.id}`,
                                    domainName: dom.name,
                                    memory: { snapshot: "no" },
                                    disks: [{ name: "vda", snapshot: "external", file }],
                                }),
                                [],
                                "snapshot XML as declared",
                            );
                        },
                        async () => {
                            assert.equal(await diskSource(dom.uuid, true), dom.disk, "the domain uses its base image again");
                            assert.deepEqual(await snapshotList(dom.uuid), []);
                        },
                    );
                },
            },
            // A connection without a host is this machine's virsh: on a host in its own root, that is not the host
            // under test, whose URIs the SSH spec below covers (the same validation runs on every host).
            ...(lab.local
                ? ([
                      {
                          input: "DomainSnapshot.connection.libvirtUri (local)",
                          type: TYPE.snapshot,
                          provider: DomainSnapshotProvider,
                          properties: ["connection.libvirtUri"],
                          hostProperties: ["connection"],
                          lanes: 3,
                          build: (e) => ({
                              connection: { libvirtUri: declareUri(e.value) },
                              domain: checkOnly.name,
                              snapshotName: declareName("hostile-uri"),
                          }),
                      },
                      {
                          input: "DomainSnapshot.connection.libvirtUri (local, as a URI fragment)",
                          type: TYPE.snapshot,
                          provider: DomainSnapshotProvider,
                          properties: ["connection.libvirtUri"],
                          hostProperties: ["connection"],
                          lanes: [[off[12]!], [off[15]!], [off[16]!]],
                          build: (e, lane) => ({
                              connection: { libvirtUri: declareUri(`qemu:///system#${e.value}`) },
                              domain: lane.doms[0]!.name,
                              snapshotName: declareName(`u-${e.id}`),
                          }),
                          use: (e, lane, checked, urn) =>
                              internalSnapshotRoundTrip(urn, checked, {
                                  uuid: lane.doms[0]!.uuid,
                                  disk: lane.doms[0]!.disk,
                                  domainName: lane.doms[0]!.name,
                                  name: `u-${e.id}`,
                              }),
                      },
                  ] satisfies Spec[])
                : []),
            {
                // Over SSH the URI crosses the remote shell. Only the shell and quote entries: every distinct URI
                // starts its own virsh shell sessions, which hold SSH channels for 30 s (see the report), so this
                // spec gets its own SSH connection (the host key with a comment is another pool key) and stays short.
                input: "DomainSnapshot.connection.libvirtUri (ssh, as a URI fragment; shell and quote entries)",
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["connection.libvirtUri"],
                hostProperties: ["connection"],
                lanes: [[off[14]!]],
                only: (e) => /^(shell|quote)-/.test(e.id),
                build: (e, lane) => ({
                    connection: { ...ssh, hostKey: `${lab.hostKey} uri-spec`, libvirtUri: `qemu:///system#${e.value}` },
                    domain: lane.doms[0]!.name,
                    snapshotName: declareName(`us-${e.id}`),
                }),
                use: (e, lane, checked, urn) =>
                    internalSnapshotRoundTrip(urn, checked, {
                        uuid: lane.doms[0]!.uuid,
                        disk: lane.doms[0]!.disk,
                        domainName: lane.doms[0]!.name,
                        name: `us-${e.id}`,
                    }),
            },
            {
                input: "DomainSnapshot.connection.user (ssh)",
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["connection.user"],
                hostProperties: ["connection"],
                lanes: 3,
                build: (e) => ({
                    connection: { ...ssh, user: e.value, dialErrorLimit: 1 },
                    domain: checkOnly.name,
                    snapshotName: declareName("hostile-user"),
                }),
            },
            {
                input: "DomainSnapshot.connection.host (ssh)",
                type: TYPE.snapshot,
                provider: DomainSnapshotProvider,
                properties: ["connection.host"],
                hostProperties: ["connection"],
                lanes: 3,
                build: (e) => ({
                    connection: { ...ssh, host: e.value, dialErrorLimit: 1, perDialTimeout: 5 },
                    domain: checkOnly.name,
                    snapshotName: declareName("hostile-host"),
                }),
            },
        ];
        if (!lab.local)
            console.log(
                `      (not on ${lab.name}: DomainSnapshot.connection.libvirtUri (local) and (local, as a URI fragment): a connection without a host is this machine's virsh, not ${lab.name}'s)`,
            );
        report(await runSpecs(specs, "DomainSnapshot"));
    });

    // ---- RestorePoint ---------------------------------------------------------------------------

    it("RestorePoint: every hostile string in domains[], snapshotName and description is refused naming it, or used literally", async () => {
        const memberSnapshots = async (
            urn: string,
            checked: Props,
            members: Array<{ uuid: string; disk: string; name: string }>,
            o: { name: string; description?: string },
        ) => {
            const s = await createChecked(urn, checked);
            let deleted = false;
            try {
                const snaps = s.outs.snapshots as Array<{ domainUuid: string; snapshotName: string }>;
                assert.deepEqual(
                    snaps.map((m) => m.domainUuid),
                    members.map((m) => m.uuid),
                    "outputs: one snapshot per declared domain, on that domain",
                );
                assert.ok(
                    snaps.every((m) => m.snapshotName === o.name),
                    "outputs: snapshotName",
                );
                for (const m of members) {
                    assert.deepEqual(await snapshotList(m.uuid), [o.name], `snapshot-list of ${show(m.name)}`);
                    assert.deepEqual(await qcow2Snapshots(m.disk), [o.name], `qemu-img info of ${show(m.name)}`);
                    const xml = await virshOk(["snapshot-dumpxml", "--domain", m.uuid, "--snapshotname", o.name]);
                    assert.deepEqual(
                        snapshotShapeProblems(xml, {
                            name: o.name,
                            description: o.description,
                            domainName: m.name,
                            memory: { snapshot: "no" },
                            disks: [{ name: "vda", snapshot: "internal" }],
                        }),
                        [],
                        "snapshot XML as declared",
                    );
                }
                await destroy(s);
                deleted = true;
                for (const m of members) {
                    assert.deepEqual(await snapshotList(m.uuid), [], "gone after delete");
                    assert.deepEqual(await qcow2Snapshots(m.disk), [], "gone from qcow2 after delete");
                }
            } finally {
                if (!deleted) await destroy(s).catch(() => undefined);
            }
        };
        const member = (d: TestDomain) => ({ uuid: d.uuid, disk: d.disk, name: d.name });
        const off = await fresh(9);
        const specs: Spec[] = [
            {
                input: "RestorePoint.domains[]",
                type: TYPE.restorePoint,
                provider: RestorePointProvider,
                properties: ["domains[0]"],
                lanes: 4,
                build: (e) => ({ domains: [declareDomain(e.value)], snapshotName: declareName("hostile-rp") }),
                use: async (e, _lane, checked, urn) => {
                    const hd = hostileDomains.get(e.id);
                    if (!hd) {
                        const s = await createChecked(urn, checked);
                        await destroy(s);
                        assert.fail(`accepted, though no domain is named this: snapshots went to ${JSON.stringify(s.outs.snapshots)}`);
                    }
                    await memberSnapshots(urn, checked, [{ uuid: hd.uuid, disk: hd.disk, name: hd.name }], { name: "hostile-rp" });
                },
            },
            {
                input: "RestorePoint.snapshotName",
                type: TYPE.restorePoint,
                provider: RestorePointProvider,
                properties: ["snapshotName"],
                lanes: [
                    [off[0]!, off[1]!],
                    [off[2]!, off[3]!],
                    [off[4]!, off[5]!],
                ],
                build: (e, lane) => ({ domains: lane.doms.map((d) => d.name), snapshotName: declareName(e.value) }),
                use: (e, lane, checked, urn) => memberSnapshots(urn, checked, lane.doms.map(member), { name: wire(e.value) }),
            },
            {
                input: "RestorePoint.description",
                type: TYPE.restorePoint,
                provider: RestorePointProvider,
                properties: ["description"],
                lanes: [[off[6]!], [off[7]!], [off[8]!]],
                build: (e, lane) => ({
                    domains: lane.doms.map((d) => d.name),
                    snapshotName: declareName(`rd-${e.id}`),
                    description: e.value,
                }),
                use: (e, lane, checked, urn) =>
                    memberSnapshots(urn, checked, lane.doms.map(member), { name: `rd-${e.id}`, description: wire(e.value) }),
            },
        ];
        report(await runSpecs(specs, "RestorePoint"));
    });

    // ---- DomainCheckpoint ---------------------------------------------------------------------------

    it("DomainCheckpoint: every hostile string in checkpointName, description and disks[].bitmap is refused naming it, or used literally", async () => {
        const ssh = sshConnection();
        const running = await fresh(6, true);
        const roundTrip = async (urn: string, checked: Props, dom: TestDomain, o: { name: string; description?: string }) => {
            const s = await createChecked(urn, checked);
            let deleted = false;
            try {
                assert.equal(s.outs.checkpointName, o.name, "outputs: checkpointName");
                if (o.description !== undefined) assert.equal(s.outs.description, o.description, "outputs: description");
                assert.deepEqual(await checkpointList(dom.uuid), [o.name], "virsh checkpoint-list --name shows exactly the name");
                const xml = await virshOk(["checkpoint-dumpxml", "--domain", dom.uuid, "--checkpointname", o.name, "--no-domain"]);
                assert.deepEqual(
                    checkpointShapeProblems(xml, { name: o.name, description: o.description, bitmap: o.name }),
                    [],
                    "checkpoint XML as declared",
                );
                await destroy(s);
                deleted = true;
                assert.deepEqual(await checkpointList(dom.uuid), [], "gone after delete");
            } finally {
                if (!deleted) await destroy(s).catch(() => undefined);
            }
        };
        const specs: Spec[] = [
            {
                input: "DomainCheckpoint.checkpointName (ssh)",
                type: TYPE.checkpoint,
                provider: DomainCheckpointProvider,
                properties: ["checkpointName"],
                lanes: [[running[0]!], [running[4]!]],
                build: (e, lane) => ({ connection: ssh, domain: lane.doms[0]!.name, checkpointName: declareName(e.value) }),
                use: (e, lane, checked, urn) => roundTrip(urn, checked, lane.doms[0]!, { name: wire(e.value) }),
            },
            {
                input: "DomainCheckpoint.description (ssh)",
                type: TYPE.checkpoint,
                provider: DomainCheckpointProvider,
                properties: ["description"],
                lanes: [[running[2]!], [running[3]!], [running[5]!]],
                build: (e, lane) => ({
                    connection: ssh,
                    domain: lane.doms[0]!.name,
                    checkpointName: declareName(`cd-${e.id}`),
                    description: e.value,
                }),
                use: (e, lane, checked, urn) => roundTrip(urn, checked, lane.doms[0]!, { name: `cd-${e.id}`, description: wire(e.value) }),
            },
            {
                input: "DomainCheckpoint.disks[].bitmap",
                type: TYPE.checkpoint,
                provider: DomainCheckpointProvider,
                properties: ["disks[0].bitmap"],
                lanes: 3,
                build: (e) => ({
                    domain: running[0]!.name,
                    checkpointName: declareName("hostile-bitmap"),
                    disks: [{ name: "vda", checkpoint: "bitmap", bitmap: e.value }],
                }),
            },
            {
                input: "DomainCheckpoint.checkpointName = disks[].bitmap",
                type: TYPE.checkpoint,
                provider: DomainCheckpointProvider,
                properties: ["checkpointName", "disks[0].bitmap"],
                lanes: [[running[1]!]],
                build: (e, lane) => ({
                    domain: lane.doms[0]!.name,
                    checkpointName: declareName(e.value),
                    disks: [{ name: "vda", checkpoint: "bitmap", bitmap: e.value }],
                }),
                use: (e, lane, checked, urn) => roundTrip(urn, checked, lane.doms[0]!, { name: wire(e.value) }),
            },
        ];
        report(await runSpecs(specs, "DomainCheckpoint"));
    });

    // ---- SnapshotRevert ---------------------------------------------------------------------------

    it("SnapshotRevert: every hostile string in snapshot is refused naming it, or reverts exactly that snapshot", async () => {
        const region = 64 * 1024;
        const off = await fresh(5);
        const spec: Spec = {
            input: "SnapshotRevert.snapshot",
            type: TYPE.revert,
            provider: SnapshotRevertProvider,
            properties: ["snapshot"],
            lanes: off.map((d) => [d]),
            build: (e, lane) => ({ domain: lane.doms[0]!.name, snapshot: declareName(e.value) }),
            // Check found no such snapshot yet (a host refusal): see below.
        };
        // Check first refuses, naming 'snapshot', both invalid names (validation) and valid ones (no such snapshot yet).
        // Then, for every name libvirt takes, the snapshot is made with virsh, and SnapshotRevert must revert exactly it.
        const t0 = Date.now();
        const problems: string[] = [];
        const t: Tally = { tried: 0, refused: 0, refusedAtHost: 0, literal: 0, failed: 0 };
        tallies.set(spec.input, t);
        const lanes: Lane[] = (spec.lanes as TestDomain[][]).map((doms, index) => ({ index, doms }));
        await Promise.all(
            lanes.map(async (lane) => {
                const dom = lane.doms[0]!;
                for (let i = lane.index; i < corpus.length; i += lanes.length) {
                    const e = corpus[i]!;
                    const value = wire(e.value);
                    const where = `${spec.input} ← ${e.id} (${e.label}) ${show(e.value)}`;
                    t.tried++;
                    await slots(() =>
                        bounded(async () => {
                            try {
                                const urn = suite.engine.urn(spec.type, `h-${e.id}`);
                                const news = await suite.engine.programInputs(SnapshotRevertProvider, spec.build(e, lane));
                                const before = await suite.engine.check(urn, {}, news);
                                assert.ok(before.failures.length > 0, "check accepted a snapshot that does not exist");
                                assert.deepEqual(
                                    [...new Set(before.failures.map((f) => f.property))],
                                    ["snapshot"],
                                    `failures name 'snapshot': ${JSON.stringify(before.failures)}`,
                                );
                                const noSuch = before.failures.every((f) => /has no snapshot/.test(f.reason) && f.reason.includes(value));
                                if (!noSuch) {
                                    t.refused++;
                                    return;
                                }
                                // A name check let through: make that snapshot (pattern p), change the disk (q), revert, read p.
                                const p = 1 + (i % 200),
                                    q = 0xfe;
                                await qemuIoWrite(dom.disk, p, 0, region);
                                const xmlFile = path.join(dom.dir, "snap.xml");
                                fs.writeFileSync(xmlFile, `<domainsnapshot><name>${xmlEscape(value)}</name></domainsnapshot>`);
                                const made = await virshLocal(["snapshot-create", "--domain", dom.uuid, "--xmlfile", xmlFile]);
                                if (made.code !== 0) {
                                    t.refusedAtHost++;
                                    return;
                                } // libvirt itself won't take the name
                                try {
                                    await qemuIoWrite(dom.disk, q, 0, region);
                                    const r = await suite.engine.check(urn, {}, news);
                                    assert.deepEqual(r.failures, [], "check accepts a snapshot that exists");
                                    const { outs } = await suite.engine.create(urn, r.inputs);
                                    assert.equal(outs.snapshot, value, "outputs: snapshot");
                                    assert.equal(outs.domainUuid, dom.uuid, "outputs: domainUuid");
                                    assert.equal(
                                        await qemuIoRead(dom.disk, p, 0, region),
                                        true,
                                        "the disk holds the snapshot's data again",
                                    );
                                    t.literal++;
                                } finally {
                                    await virshOk(["snapshot-delete", "--domain", dom.uuid, "--snapshotname", value]);
                                }
                                assert.deepEqual(await snapshotList(dom.uuid), []);
                            } catch (err) {
                                t.failed++;
                                problem(problems, `${where}: ${(err as Error).message.split("\n").slice(0, 8).join("\n      ")}`);
                            }
                        }).catch((err: Error) => {
                            t.failed++;
                            problem(problems, `${where}: ${err.message}`);
                        }),
                    );
                }
            }),
        );
        timings.push(["SnapshotRevert", Date.now() - t0]);
        console.log(`      ${row(spec.input, t)}`);
        console.log(`      SnapshotRevert: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        report(problems);
    });

    // ---- afterwards ---------------------------------------------------------------------------

    it("afterwards: no canary file, nothing left on our domains or the lab's, and virsh got only the options it was meant to get", async () => {
        const problems: string[] = [];
        // Canaries: absolute ones in their folder, bare ones wherever a shell could have started.
        for (const e of corpus)
            for (const c of e.canaries)
                if (c.startsWith("/") && fs.existsSync(c)) problems.push(`canary ${c} exists (${e.id}: ${e.label})`);
        if (fs.readdirSync(canaryDir).length) problems.push(`the canary folder is not empty: ${fs.readdirSync(canaryDir).join(", ")}`);
        const shellHomes = [
            PACKAGE_ROOT,
            process.cwd(),
            "/",
            "/root",
            os.homedir(),
            os.tmpdir(),
            "/var/lib/libvirt",
            "/var/lib/libvirt/qemu",
            lab.labDir,
            // Where a shell on a host in its own root could have started.
            ...(lab.rootDir ? ["/", "/root", "/tmp", "/home/labuser", "/var/lib/libvirt/qemu"].map((d) => path.join(lab.rootDir!, d)) : []),
        ];
        const bare = `${RELATIVE_CANARY_PREFIX}${token}`;
        for (const dir of shellHomes) {
            for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : [])
                if (f.startsWith(bare)) problems.push(`canary ${path.join(dir, f)} exists`);
        }
        const walk = (dir: string): string[] =>
            fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
                const p = path.join(dir, d.name);
                return [...(d.name.startsWith(bare) ? [p] : []), ...(d.isDirectory() ? walk(p) : [])];
            });
        for (const d of [...suite.domains.map((x) => x.dir), ...[...hostileDomains.values()].map((h) => h.dir)])
            problems.push(...walk(d).map((p) => `canary ${p} exists`));

        // Our domains: no snapshot, checkpoint or overlay left; qcow2 holds no snapshot.
        for (const d of suite.domains) {
            if ((await snapshotList(d.uuid)).length)
                problems.push(`domain ${d.name} still has snapshots ${JSON.stringify(await snapshotList(d.uuid))}`);
            if ((await checkpointList(d.uuid)).length)
                problems.push(`domain ${d.name} still has checkpoints ${JSON.stringify(await checkpointList(d.uuid))}`);
            if ((await qcow2Snapshots(d.disk)).length)
                problems.push(`disk of ${d.name} still holds qcow2 snapshots ${JSON.stringify(await qcow2Snapshots(d.disk))}`);
            const src = await diskSource(d.uuid, false);
            if (src !== d.disk) problems.push(`domain ${d.name} runs on ${src}, not its base image`);
        }
        for (const hd of hostileDomains.values()) {
            if ((await snapshotList(hd.uuid)).length) problems.push(`hostile-named domain ${show(hd.name)} still has snapshots`);
            if ((await qcow2Snapshots(hd.disk)).length)
                problems.push(`disk of hostile-named domain ${show(hd.name)} still holds qcow2 snapshots`);
        }
        // The lab's domains: nothing of ours appeared (other test runs may be using them, so only our names count).
        for (const d of lab.domains) {
            const was = labBefore.get(d.name)!;
            const now = { snapshots: await snapshotList(d.name), checkpoints: await checkpointList(d.name) };
            for (const n of [
                ...now.snapshots.filter((x) => !was.snapshots.includes(x)),
                ...now.checkpoints.filter((x) => !was.checkpoints.includes(x)),
            ]) {
                if (declared.names.has(n)) problems.push(`lab domain ${d.name} gained ${show(n)}`);
            }
        }
        // virsh: the wrapper logged every invocation through the stack's connection, and every line its shell sessions read.
        const { processes, sessions, sessionLines } = readVirshLog(wrapper.dir);
        if (processes.length < 100) problems.push(`the virsh wrapper logged only ${processes.length} calls: is it on the server's PATH?`);
        const mangled = processes.filter((a) => mangledUris.has(a[1] ?? ""));
        if (mangled.length)
            problems.push(
                `${mangled.length} virsh calls got a libvirtUri with U+FFFD in place of an unpaired surrogate: check should have refused it`,
            );
        for (const argv of processes) problems.push(...argvProblems(argv, declared));
        for (const cmd of sessions) {
            if (!SESSION_READ_ONLY.has(cmd[0] ?? "") && !SESSION_WRITES.has(cmd[0] ?? ""))
                problems.push(
                    `virsh's shell ran ${JSON.stringify(cmd)}: only read-only commands, the deletes and the creates belong in a session`,
                );
            problems.push(...argvProblems(["-c", wrapper.uri, ...cmd], declared));
        }
        // The creates' XML files (provider/host/hostShell.ts) are removed once each command ran.
        const xmlLeft = () => hostXmlFiles(lab).files.map((f) => f.path);
        for (let i = 0; i < 50 && xmlLeft().length; i++) await sleep(100);
        if (xmlLeft().length) problems.push(`create XML files left on the host: ${xmlLeft().join(", ")}`);
        const count = (cmd: string) => processes.filter((a) => a[2] === cmd).length + sessions.filter((c) => c[0] === cmd).length;
        console.log(
            `      virsh wrapper: ${processes.length} virsh processes (${count("snapshot-create")} snapshot-create, ${count("snapshot-delete")} snapshot-delete) and ${sessions.length} commands in ${sessionLines} lines of virsh shell sessions checked`,
        );
        report(problems);
    });
});
