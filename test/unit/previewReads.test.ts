// Preview only reads: check and diff in the lost-record case (the domain undefined and defined again under a new UUID,
// libvirt with no record, the data still in the images) send the host nothing but reads. A scripted host stands in for
// the local transport, below every layer of the provider, and records every command that reaches it; the lab suites
// (lostRecord.test.ts, domainCheckpoint.test.ts) prove the rest against real libvirt.
import * as assert from "node:assert/strict";
import { setStackConfig } from "../../provider/stackConfig";
import { closeAllTransports, transportFor, type ExecOptions, type ExecResult, type Transport } from "../../provider/host/transport";
import { domainCheckpoint } from "../../provider/resources/domainCheckpoint";
import { domainSnapshot } from "../../provider/resources/domainSnapshot";

const OLD_UUID = "11111111-2222-3333-4444-555555555555";
const NEW_UUID = "99999999-8888-7777-6666-555555555555";
const DISK = "/var/lib/libvirt/images/web1.qcow2";
const DOMAIN_XML =
    `<domain type='kvm'><name>web1</name><uuid>${NEW_UUID}</uuid><memory unit='KiB'>65536</memory><devices>` +
    `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${DISK}'/><target dev='vda' bus='virtio'/></disk>` +
    `</devices></domain>`;
/** The domain as it was when the moments were made: the kept records carry it, with the old UUID. */
const OLD_DOMAIN_XML = DOMAIN_XML.replace(NEW_UUID, OLD_UUID);

const CHECKPOINT_XML =
    `<domaincheckpoint><name>ck1</name><creationTime>1700000000</creationTime>` +
    `<disks><disk name='vda' checkpoint='bitmap' bitmap='ck1'/></disks>${OLD_DOMAIN_XML}</domaincheckpoint>`;
const SNAPSHOT_XML =
    `<domainsnapshot><name>s1</name><state>running</state><creationTime>1700000000</creationTime><memory snapshot='internal'/>` +
    `<disks><disk name='vda' snapshot='internal'/></disks>${OLD_DOMAIN_XML}</domainsnapshot>`;

/**
 * Every command preview may send, by name: virsh's read-only queries, and the host's `qemu-img info`, `stat` and `df`.
 * Anything else (checkpoint-create, snapshot-create, --redefine, a delete, resume...) is a write, and fails the test.
 */
const READ_ONLY_VIRSH = new Set([
    "version",
    "capabilities",
    "domcapabilities",
    "dumpxml",
    "domstate",
    "dominfo",
    "domuuid",
    "domname",
    "domjobinfo",
    "snapshot-list",
    "snapshot-info",
    "snapshot-dumpxml",
    "snapshot-current",
    "snapshot-parent",
    "checkpoint-list",
    "checkpoint-info",
    "checkpoint-dumpxml",
    "checkpoint-parent",
]);
/** Options that make a read-only command change something: none of the queries above has one, but say so. */
const WRITE_OPTIONS = /^--(redefine|redefine-validate|current|metadata|children|delete|force|reset)$/;

function isRead(argv: readonly string[], stdin: string | undefined): boolean {
    // Whatever carries XML on its stdin defines or creates something.
    if (stdin !== undefined) return false;
    if (argv.some((a) => WRITE_OPTIONS.test(a))) return false;
    const [cmd, ...rest] = argv;
    if (cmd === "virsh") return READ_ONLY_VIRSH.has(rest[2] ?? "");
    if (cmd === "qemu-img") return rest[0] === "info";
    return cmd === "stat" || cmd === "df";
}

interface World {
    state: "running" | "shut off";
    /** What libvirt has a record of now (none: it lost them); a checkpoint's with its XML. */
    checkpoints: Map<string, string>;
    snapshots: string[];
    /** What the image holds, as qemu-img shows it: its internal snapshots; and the bitmaps (qemu's too, for --redefine-validate). */
    imageSnapshots: string[];
    imageBitmaps: string[];
}

/**
 * The local transport replaced by a scripted host: one domain, web1, defined again under NEW_UUID. Every command is
 * recorded (its argv without `env LC_ALL=C` and virsh's `-c URI`). Long-lived shells are refused, so every command
 * comes to exec, where it is seen.
 */
function scriptHost(world: World) {
    const sent: Array<{ argv: string[]; stdin?: string }> = [];
    const t = transportFor({}) as Transport & { exec: Transport["exec"]; spawn: Transport["spawn"] };
    const ok = (stdout: string): ExecResult => ({ code: 0, signal: null, stdout, stderr: "" });
    const fail = (stderr: string): ExecResult => ({ code: 1, signal: null, stdout: "", stderr: `error: ${stderr}\n` });
    const domainIs = (d: string | undefined) => d === "web1" || d === NEW_UUID;
    const answer = (argv: string[], stdin: string | undefined): ExecResult => {
        const [cmd, ...rest] = argv;
        if (cmd === "qemu-img") {
            const snapshots = world.imageSnapshots.map((name, i) => ({ id: String(i + 1), name }));
            const bitmaps = world.imageBitmaps.map((name) => ({ name, flags: ["auto"], granularity: 65536 }));
            return ok(
                JSON.stringify([{ filename: DISK, format: "qcow2", snapshots, "format-specific": { type: "qcow2", data: { bitmaps } } }]),
            );
        }
        if (cmd !== "virsh") return fail(`${cmd}: not scripted`);
        const [sub, ...args] = rest.slice(2);
        const domain = args[args.indexOf("--domain") + 1];
        if (sub === "version") return ok("Using library: libvirt 9.0.0\nRunning against daemon: 9.0.0\nRunning hypervisor: QEMU 7.2.0\n");
        if (sub === "capabilities" || sub === "domcapabilities") return ok("<capabilities/>\n");
        if (!domainIs(domain)) return fail(`failed to get domain '${domain}'`);
        switch (sub) {
            case "dumpxml":
                return ok(DOMAIN_XML);
            case "domstate":
                return ok(`${world.state}\n\n`);
            case "checkpoint-list":
                return ok([...world.checkpoints.keys()].map((n) => `${n}\n`).join("") + "\n");
            case "snapshot-list":
                return ok(world.snapshots.map((n) => `${n}\n`).join("") + "\n");
            case "checkpoint-info":
            case "checkpoint-dumpxml":
            case "checkpoint-delete": {
                const name = args[args.indexOf("--checkpointname") + 1]!;
                const xml = world.checkpoints.get(name);
                if (xml === undefined) return fail(`Domain checkpoint not found: no domain checkpoint with matching name '${name}'`);
                if (sub === "checkpoint-delete") world.checkpoints.delete(name);
                if (sub !== "checkpoint-dumpxml") return ok(sub === "checkpoint-info" ? `Name: ${name}\n` : "");
                const sized = args.includes("--size") ? xml.replace(/(<disk [^>]*?)\/>/g, "$1 size='65536'/>") : xml;
                return ok(args.includes("--no-domain") ? sized.replace(/<domain[\s>][\s\S]*<\/domain>/, "") : sized);
            }
            case "snapshot-info":
            case "snapshot-dumpxml":
                return fail(`Domain snapshot not found: no domain snapshot with matching name '${args[args.length - 1]}'`);
            case "snapshot-current":
                return fail("the domain does not have a current snapshot");
            case "checkpoint-create":
            case "snapshot-create": {
                // What a restore does: libvirt takes the record back.
                const name = /<name>([^<]+)<\/name>/.exec(stdin ?? "")?.[1] ?? "?";
                if (args.includes("--redefine-validate") && !world.imageBitmaps.includes(name))
                    return fail(`operation failed: checkpoint inconsistent: missing or broken bitmap '${name}' for disk 'vda'`);
                if (sub === "checkpoint-create") world.checkpoints.set(name, stdin ?? "");
                else world.snapshots.push(name);
                return ok("");
            }
        }
        return fail(`virsh ${sub}: not scripted`);
    };
    const exec = async (argv: readonly string[], opts: ExecOptions): Promise<ExecResult> => {
        let a = [...argv];
        if (a[0] === "env" && a[1] === "LC_ALL=C") a = a.slice(2);
        if (a[0] === "sudo") a = a.slice(2);
        sent.push({ argv: a, ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}) });
        return answer(a, opts.stdin);
    };
    const spawn: Transport["spawn"] = async () => {
        throw new Error("no long-lived shells on the scripted host");
    };
    Object.assign(t, { exec, spawn });
    const restore = () => {
        delete (t as Partial<typeof t>).exec;
        delete (t as Partial<typeof t>).spawn;
        closeAllTransports();
    };
    const writes = () => sent.filter((c) => !isRead(c.argv, c.stdin)).map((c) => c.argv.join(" ") + (c.stdin ? " <stdin" : ""));
    return { sent, writes, restore };
}

const lines = (sent: Array<{ argv: string[] }>) => sent.map((c) => c.argv.join(" ")).join("\n");

describe("preview only reads: check and diff of a lost record (scripted host)", () => {
    let host: ReturnType<typeof scriptHost> | undefined;
    beforeEach(() => setStackConfig(() => undefined));
    afterEach(() => {
        host?.restore();
        host = undefined;
    });

    it("the allowlist tells reads from writes", () => {
        assert.equal(isRead(["virsh", "-c", "qemu:///system", "checkpoint-list", "--domain", "d", "--name"], undefined), true);
        assert.equal(isRead(["qemu-img", "info", "--output=json", "-U", "--", "/x"], undefined), true);
        for (const argv of [
            ["virsh", "-c", "qemu:///system", "checkpoint-create", "--domain", "d", "--xmlfile", "/dev/stdin", "--redefine"],
            ["virsh", "-c", "qemu:///system", "snapshot-delete", "--domain", "d", "--snapshotname", "s"],
            ["virsh", "-c", "qemu:///system", "checkpoint-dumpxml", "--domain", "d", "--checkpointname", "c", "--redefine"],
            ["qemu-img", "bitmap", "--remove", "/x", "c"],
            ["rm", "-f", "--", "/x"],
        ])
            assert.equal(isRead(argv, undefined), false, argv.join(" "));
        assert.equal(isRead(["virsh", "-c", "qemu:///system", "dumpxml", "--domain", "d"], "<x/>"), false, "anything with stdin");
    });

    const checkpointInputs = { domain: "web1", checkpointName: "ck1" };
    const checkpointOlds = {
        domain: "web1",
        checkpointName: "ck1",
        deletion: "delete",
        domainName: "web1",
        domainUuid: OLD_UUID,
        creationTime: "2023-11-14T22:13:20.000Z",
        parent: null,
        disks: [{ name: "vda", checkpoint: "bitmap", bitmap: "ck1", changedBytes: 0 }],
        changedBytes: 0,
        changedBytesAt: "2023-11-14T22:13:20.000Z",
        xml: CHECKPOINT_XML,
        lineage: [],
        libvirtVersion: "9.0.0",
        adopted: false,
        restoredAt: null,
        bitmapsHealthy: true,
        bitmapProblems: [],
        declared: { domain: "web1", checkpointName: "ck1", quiesce: false, deletion: "delete", adopt: false },
    } as unknown as Parameters<typeof domainCheckpoint.diff>[1];

    for (const state of ["running", "shut off"] as const) {
        it(`DomainCheckpoint, domain ${state}: check and diff send only reads, and diff plans the update that gives it back`, async () => {
            const world: World = { state, checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] };
            host = scriptHost(world);
            const c = await domainCheckpoint.check(checkpointInputs, checkpointInputs);
            assert.deepEqual(c.failures ?? [], []);
            const d = await domainCheckpoint.diff(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs);
            assert.ok(host.sent.length > 0, "diff asked the host");
            assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent)}`);
            assert.ok(!host.sent.some((x) => x.argv.includes("checkpoint-create") || x.argv.includes("--redefine")), lines(host.sent));
            assert.deepEqual([...world.checkpoints.keys()], [], "libvirt still has no record");
            assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false }, "an update gives the record back");
        });
    }

    it("DomainCheckpoint, domain shut off and the bitmap gone from the image: diff reads, and plans a new checkpoint", async () => {
        const world: World = { state: "shut off", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: [] };
        host = scriptHost(world);
        const d = await domainCheckpoint.diff(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs);
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent)}`);
        assert.deepEqual(d, { changes: true, replaces: ["checkpointName"], deleteBeforeReplace: true });
    });

    it("DomainCheckpoint: the update diff planned gives the record back, under the domain's new UUID", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] };
        host = scriptHost(world);
        const u = await domainCheckpoint.update(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs);
        const redefines = host.sent.filter((x) => x.argv.includes("checkpoint-create"));
        assert.deepEqual(
            redefines.map((x) => x.argv.slice(3).join(" ")),
            [`checkpoint-create --domain ${NEW_UUID} --xmlfile /dev/stdin --redefine --redefine-validate`],
        );
        assert.match(redefines[0]!.stdin!, new RegExp(`<uuid>${NEW_UUID}</uuid>`));
        assert.deepEqual([...world.checkpoints.keys()], ["ck1"]);
        const outs = u.outs as Record<string, unknown>;
        assert.equal(outs.domainUuid, NEW_UUID);
        assert.ok(Date.parse(outs.restoredAt as string) > 0, "restoredAt records it");
        assert.equal(outs.bitmapsHealthy, true);
    });

    it("DomainCheckpoint, domain running and the bitmap gone: only libvirt can tell, so the update finds out, and says so", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: [] };
        host = scriptHost(world);
        const d = await domainCheckpoint.diff(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs);
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent)}`);
        assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false });
        const failure = await domainCheckpoint.update(`${OLD_UUID}/ck1`, checkpointOlds, checkpointInputs).then(
            () => assert.fail("the update gave back a record whose bitmap is gone"),
            (e: Error & { id?: string; properties?: Record<string, unknown>; reasons?: string[] }) => e,
        );
        assert.match(
            failure.message,
            /^checkpoint 'ck1' of domain 'web1' is gone and can't be restored \(.*checkpoint inconsistent: .*\)\. Nothing was changed\. The next pulumi up creates it again\.$/,
        );
        assert.deepEqual([...world.checkpoints.keys()], [], "nothing made up");
        // An init failure: the engine keeps these outputs, so the next diff plans a new checkpoint instead of this update.
        assert.equal(failure.id, `${OLD_UUID}/ck1`);
        assert.deepEqual(failure.reasons, [failure.message]);
        const kept = failure.properties!;
        assert.equal(kept.recordLost, true);
        assert.equal(kept.bitmapsHealthy, false);
        assert.equal(kept.domainUuid, NEW_UUID);
        const again = await domainCheckpoint.diff(`${OLD_UUID}/ck1`, kept as unknown as typeof checkpointOlds, checkpointInputs);
        assert.deepEqual(again, { changes: true, replaces: ["checkpointName"], deleteBeforeReplace: true });
        assert.deepEqual(
            host.writes().filter((w) => !w.includes("--redefine-validate")),
            [],
            "only the update's refused redefine",
        );
    });

    it("DomainCheckpoint: delete of a lost record gives it back first, so libvirt removes the bitmaps too", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] };
        host = scriptHost(world);
        await domainCheckpoint.delete(`${OLD_UUID}/ck1`, checkpointOlds);
        assert.deepEqual(host.writes(), [
            `virsh -c qemu:///system checkpoint-create --domain ${NEW_UUID} --xmlfile /dev/stdin --redefine --redefine-validate <stdin`,
            `virsh -c qemu:///system checkpoint-delete --domain ${NEW_UUID} --checkpointname ck1`,
        ]);
        assert.deepEqual([...world.checkpoints.keys()], []);
    });

    for (const state of ["running", "shut off"] as const) {
        it(`DomainCheckpoint, domain ${state}: refresh (read) only reads, and keeps the lost record with recordLost and the new UUID`, async () => {
            const world: World = { state, checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: ["ck1"] };
            host = scriptHost(world);
            const r = await domainCheckpoint.read(`${OLD_UUID}/ck1`, checkpointOlds);
            assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent)}`);
            assert.deepEqual([...world.checkpoints.keys()], [], "libvirt still has no record");
            assert.equal(r.id, `${OLD_UUID}/ck1`, "kept: the id stays, so nothing is replaced");
            const props = r.props as Record<string, unknown>;
            assert.equal(props.recordLost, true);
            assert.equal(props.domainUuid, NEW_UUID);
            assert.equal(props.xml, CHECKPOINT_XML, "the kept record stays, for the update that gives it back");
            assert.equal(props.restoredAt, null);
            // The next diff plans that update.
            const d = await domainCheckpoint.diff(r.id!, props as unknown as typeof checkpointOlds, checkpointInputs);
            assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false });
            assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent)}`);
        });
    }

    it("DomainCheckpoint, domain shut off and the bitmap gone from the image: refresh drops it, and only reads", async () => {
        const world: World = { state: "shut off", checkpoints: new Map(), snapshots: [], imageSnapshots: [], imageBitmaps: [] };
        host = scriptHost(world);
        const r = await domainCheckpoint.read(`${OLD_UUID}/ck1`, checkpointOlds);
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent)}`);
        assert.deepEqual(r, { id: "", props: {} });
    });

    const snapshotInputs = { domain: "web1", snapshotName: "s1" };
    const snapshotOlds = {
        domain: "web1",
        snapshotName: "s1",
        deletion: "delete",
        domainName: "web1",
        domainUuid: OLD_UUID,
        creationTime: "2023-11-14T22:13:20.000Z",
        state: "running",
        parent: null,
        isCurrent: true,
        kind: "internal",
        memory: "internal",
        diskFiles: {},
        libvirtVersion: "9.0.0",
        adopted: false,
        xml: SNAPSHOT_XML,
        recordLost: false,
        restoredAt: null,
        declared: { domain: "web1", snapshotName: "s1", kind: "internal", quiesce: false, atomic: true, live: false, halt: false },
    } as unknown as Parameters<typeof domainSnapshot.diff>[1];

    it("DomainSnapshot: check and diff send only reads, and diff plans an update that gives the record back", async () => {
        const world: World = { state: "running", checkpoints: new Map(), snapshots: [], imageSnapshots: ["s1"], imageBitmaps: [] };
        host = scriptHost(world);
        const c = await domainSnapshot.check(snapshotInputs, snapshotInputs);
        assert.deepEqual(c.failures ?? [], []);
        const d = await domainSnapshot.diff(`${OLD_UUID}/s1`, snapshotOlds, snapshotInputs);
        assert.ok(
            host.sent.some((x) => x.argv[0] === "qemu-img"),
            "diff looked for the data in the image",
        );
        assert.deepEqual(host.writes(), [], `only reads, but it sent:\n${lines(host.sent)}`);
        assert.deepEqual(world.snapshots, [], "libvirt still has no record");
        assert.deepEqual(d, { changes: true, replaces: [], deleteBeforeReplace: false });
    });
});
