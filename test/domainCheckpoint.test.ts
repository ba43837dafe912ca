// DomainCheckpoint through the engine path: the SDK serializes the real provider
// object, @pulumi/pulumi's dynamic-provider server runs it, and virsh acts on
// real lab domains whose guest writes to its own disk, so the dirty bitmaps
// have real changes in them. Bitmaps are checked through QMP while the domain
// runs, and with qemu-img after it is shut off.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainCheckpointProvider } from "pulumi-libvirt-snapshots";
import { ProviderCallError, UNKNOWN, type ResourceState } from "./harness/engine";
import { observe } from "./support/compat";
import { engineSuite } from "./support/fixture";
import { checkpointNames, defaultTarget, domstate, expectCallError, re, sameHostConnection, sshConnection } from "./support/helpers";
import { loadLab, qemuImgInfo, readGuestCounter, virshLocal, virshOk, waitGuestCounter, type TestDomain } from "./support/lab";

const lab = loadLab();
const CLUSTER = 65536;

async function parentOf(domain: string, name: string): Promise<string | null> {
    const r = await virshLocal(["checkpoint-parent", "--domain", domain, "--checkpointname", name]);
    return r.code === 0 ? r.stdout.trim() : null;
}

/** The dirty bitmaps qemu holds for the domain's disk, with their dirty byte counts (QMP). */
async function qmpBitmaps(domain: string): Promise<Map<string, number>> {
    const out = await virshOk([
        "qemu-monitor-command",
        "--domain",
        domain,
        "--cmd",
        JSON.stringify({ execute: "query-named-block-nodes", arguments: { flat: true } }),
    ]);
    const nodes = (
        JSON.parse(out) as {
            return: Array<{ drv: string; "dirty-bitmaps"?: Array<{ name: string; count: number; persistent?: boolean }> }>;
        }
    ).return;
    const m = new Map<string, number>();
    for (const n of nodes) if (n.drv === "qcow2") for (const b of n["dirty-bitmaps"] ?? []) m.set(b.name, b.count);
    return m;
}

/** Remove a dirty bitmap through QMP, as if it had been lost. */
async function removeBitmapBehindLibvirt(domain: string, name: string): Promise<void> {
    const out = await virshOk([
        "qemu-monitor-command",
        "--domain",
        domain,
        "--cmd",
        JSON.stringify({ execute: "query-named-block-nodes", arguments: { flat: true } }),
    ]);
    const nodes = (JSON.parse(out) as { return: Array<{ "node-name": string; "dirty-bitmaps"?: Array<{ name: string }> }> }).return;
    const node = nodes.find((n) => n["dirty-bitmaps"]?.some((b) => b.name === name));
    assert.ok(node, `no node holds bitmap ${name}`);
    await virshOk([
        "qemu-monitor-command",
        "--domain",
        domain,
        "--cmd",
        JSON.stringify({ execute: "block-dirty-bitmap-remove", arguments: { node: node["node-name"], name } }),
    ]);
}

/** The bitmaps stored in a (shut-off) qcow2 image, with their flags. */
async function imageBitmaps(disk: string): Promise<Array<{ name: string; flags: string[] }>> {
    const info = await qemuImgInfo(disk);
    return (info["format-specific"]?.data.bitmaps ?? [])
        .map((b) => ({ name: b.name, flags: b.flags }))
        .sort((a, b) => a.name.localeCompare(b.name));
}

/** Let the writer guest put `n` more counters on its disk (each lands in a fresh 64 KiB cluster). */
async function guestWrites(dom: TestDomain, n: number): Promise<void> {
    const start = await readGuestCounter(dom.disk);
    const reached = await waitGuestCounter(dom.disk, start + n - 1, 30_000);
    assert.ok(reached >= start + n, `the writer guest of ${dom.name} wrote ${reached - start} counters in 30 s, wanted ${n}`);
}

/**
 * What `virsh undefine` + `virsh define` does to a domain that is recreated by
 * some other tool: libvirt drops every checkpoint record; the bitmaps stay in qcow2.
 */
async function loseMetadata(dom: TestDomain, opts: { start: boolean }): Promise<void> {
    const xml = await virshOk(["dumpxml", "--inactive", "--domain", dom.name]);
    const file = path.join(dom.dir, "redefine.xml");
    fs.writeFileSync(file, xml);
    if ((await domstate(dom.name)) !== "shut off") await virshOk(["destroy", "--domain", dom.name]);
    await virshOk(["undefine", "--domain", dom.name, "--checkpoints-metadata", "--snapshots-metadata"]);
    await virshOk(["define", "--file", file]);
    if (opts.start) await virshOk(["start", "--domain", dom.name]);
    assert.deepEqual(await checkpointNames(dom.name), [], "libvirt lost the records");
}

describe("DomainCheckpoint (engine path, real lab)", function () {
    this.timeout(180_000);
    const suite = engineSuite("labtmp-ckpt-");
    const { newDomain } = suite;

    const up = (name: string, inputs: Record<string, unknown>) => suite.up(name, DomainCheckpointProvider, inputs);
    const failuresOf = (inputs: Record<string, unknown>, olds: Record<string, unknown> = {}) =>
        suite.failuresOf(DomainCheckpointProvider, inputs, olds);

    it("on a running domain whose guest writes: changedBytes grows, and refresh shows it", async () => {
        const dom = await newDomain({ running: true, writer: true });
        await guestWrites(dom, 1);
        const s = await up("grow", { domain: dom.name, checkpointName: "before-upgrade", description: "before the kernel upgrade" });
        assert.equal(s.id, `${dom.uuid}/before-upgrade`);
        assert.equal(s.outs.checkpointName, "before-upgrade");
        assert.equal(s.outs.domainName, dom.name);
        assert.equal(s.outs.domainUuid, dom.uuid);
        assert.equal(s.outs.description, "before the kernel upgrade");
        assert.equal(s.outs.parent, null);
        assert.deepEqual(s.outs.lineage, []);
        assert.equal(s.outs.adopted, false);
        assert.equal(s.outs.restoredAt, null);
        assert.equal(s.outs.libvirtVersion, lab.libvirtVersion);
        assert.ok(Math.abs(Date.parse(s.outs.creationTime as string) - Date.now()) < 120_000);
        assert.match(s.outs.xml as string, /^<domaincheckpoint>[\s\S]*<name>before-upgrade<\/name>[\s\S]*<domain type=/);
        const disks = s.outs.disks as Array<Record<string, unknown>>;
        assert.deepEqual(
            disks.map((d) => [d.name, d.checkpoint, d.bitmap]),
            [["vda", "bitmap", "before-upgrade"]],
        );
        const c0 = s.outs.changedBytes as number;
        assert.equal(typeof c0, "number");
        assert.equal(disks[0]!.changedBytes, c0);
        assert.deepEqual([...(await qmpBitmaps(dom.name)).keys()], ["before-upgrade"]);

        await guestWrites(dom, 4);
        const r1 = (await suite.engine.refresh(s))!;
        const c1 = r1.outs.changedBytes as number;
        assert.ok(c1 >= c0 + 4 * CLUSTER, `changedBytes grew from ${c0} to ${c1} after 4 guest writes`);
        assert.equal(c1 % CLUSTER, 0, "bitmaps count whole 64 KiB clusters");
        assert.ok(Date.parse(r1.outs.changedBytesAt as string) > Date.parse(s.outs.changedBytesAt as string));
        assert.equal(r1.outs.creationTime, s.outs.creationTime);
        await guestWrites(dom, 4);
        const c2 = (await suite.engine.refresh(r1))!.outs.changedBytes as number;
        assert.ok(c2 >= c1 + 4 * CLUSTER, `changedBytes grew from ${c1} to ${c2}`);

        await suite.engine.destroy(r1);
        assert.deepEqual(await checkpointNames(dom.name), []);
        assert.deepEqual([...(await qmpBitmaps(dom.name)).keys()], [], "the bitmap is removed from the image");
        assert.equal(await domstate(dom.name), "running");
    });

    it("a chain of three: deleting the middle re-parents the child, and the parent's bitmap covers the deleted one's changes", async () => {
        const dom = await newDomain({ running: true, writer: true });
        await guestWrites(dom, 1);
        const states: ResourceState[] = [];
        for (const i of [1, 2, 3]) {
            states.push(await up(`chain-${i}`, { domain: dom.name, checkpointName: `chain-${i}` }));
            await guestWrites(dom, 3);
        }
        const [c1, c2, c3] = states as [ResourceState, ResourceState, ResourceState];
        assert.equal(c2.outs.parent, "chain-1");
        assert.equal(c3.outs.parent, "chain-2");
        assert.deepEqual(
            (c3.outs.lineage as Array<{ name: string }>).map((l) => l.name),
            ["chain-1", "chain-2"],
        );
        const before = await qmpBitmaps(dom.name);
        assert.deepEqual([...before.keys()].sort(), ["chain-1", "chain-2", "chain-3"]);
        assert.ok(
            before.get("chain-1")! > before.get("chain-2")! && before.get("chain-2")! > before.get("chain-3")!,
            JSON.stringify([...before]),
        );

        await suite.engine.destroy(c2);
        assert.deepEqual(await checkpointNames(dom.name), ["chain-1", "chain-3"]);
        assert.equal(await parentOf(dom.name, "chain-3"), "chain-1");
        const r3 = (await suite.engine.refresh(c3))!;
        assert.equal(r3.outs.parent, "chain-1", "the child is re-parented");
        assert.deepEqual(
            (r3.outs.lineage as Array<{ name: string }>).map((l) => l.name),
            ["chain-1"],
        );
        const after = await qmpBitmaps(dom.name);
        assert.deepEqual([...after.keys()].sort(), ["chain-1", "chain-3"], "chain-2's bitmap is gone from qemu");
        assert.ok(
            after.get("chain-1")! >= before.get("chain-2")!,
            `chain-1 (${after.get("chain-1")} bytes) still covers every block chain-2 had (${before.get("chain-2")})`,
        );
        assert.ok(after.get("chain-1")! >= before.get("chain-1")!);

        // Shut off: the image itself holds exactly the two remaining bitmaps, cleanly closed.
        await virshOk(["destroy", "--domain", dom.name]);
        assert.deepEqual(await imageBitmaps(dom.disk), [
            { name: "chain-1", flags: ["auto"] },
            { name: "chain-3", flags: ["auto"] },
        ]);

        // Deleting on a shut-off domain is refused before anything is done.
        const msg = await expectCallError(
            suite.engine.destroy(r3),
            new RegExp(
                `cannot delete checkpoint 'chain-3' of domain '.*': the domain is shut off, and libvirt ${re(lab.libvirtVersion)} removes a checkpoint's bitmaps only while the domain runs .*Nothing was changed\\. Start the domain and run destroy again, or set deletion: 'metadata'`,
            ),
        );
        assert.ok(!/\bat \S+\.js/.test(msg), "no stack trace in the message");
        // libvirt asked directly says the same, and changes nothing either.
        const direct = await virshLocal(["checkpoint-delete", "--domain", dom.name, "--checkpointname", "chain-3"]);
        assert.match(direct.stderr, /cannot delete checkpoint for inactive domain/);
        observe("checkpoint-delete-offline", direct.code === 0 ? "works" : "refused");
        assert.deepEqual(await checkpointNames(dom.name), ["chain-1", "chain-3"]);
        assert.deepEqual(
            (await imageBitmaps(dom.disk)).map((b) => b.name),
            ["chain-1", "chain-3"],
        );

        // deletion: 'metadata' works on a shut-off domain and leaves the bitmap in the image.
        const ch = await suite.engine.change(r3, DomainCheckpointProvider, {
            domain: dom.name,
            checkpointName: "chain-3",
            deletion: "metadata",
        });
        assert.equal(ch.op, "update");
        await suite.engine.destroy(ch.state);
        assert.deepEqual(await checkpointNames(dom.name), ["chain-1"]);
        assert.deepEqual(
            (await imageBitmaps(dom.disk)).map((b) => b.name),
            ["chain-1", "chain-3"],
        );

        await virshOk(["start", "--domain", dom.name]);
        await suite.engine.destroy(c1);
        assert.deepEqual(await checkpointNames(dom.name), []);
        assert.deepEqual([...(await qmpBitmaps(dom.name)).keys()], ["chain-3"], "only the bitmap deletion: 'metadata' left behind");
    });

    it("metadata loss, domain running: diff and refresh only read; up restores the chain (--redefine); delete works", async () => {
        const dom = await newDomain({ running: true, writer: true });
        const m1 = await up("ml-1", { domain: dom.name, checkpointName: "ml-1", description: "first" });
        await guestWrites(dom, 2);
        const m2 = await up("ml-2", { domain: dom.name, checkpointName: "ml-2" });
        await guestWrites(dom, 2);

        await loseMetadata(dom, { start: true });
        assert.deepEqual([...(await qmpBitmaps(dom.name)).keys()].sort(), ["ml-1", "ml-2"], "the bitmaps are still in the image");

        // diff (preview) only reads: it plans the update that restores the record.
        const d = await suite.engine.diff(m2.urn, m2.id, m2.outs, m2.inputs);
        assert.equal(d.changes, "some");
        assert.deepEqual(d.replaces, []);
        assert.deepEqual(await checkpointNames(dom.name), [], "diff wrote nothing");

        // The update of the child restores its parent first (libvirt needs it), then itself.
        const ch = await suite.engine.change(m2, DomainCheckpointProvider, { domain: dom.name, checkpointName: "ml-2" });
        assert.equal(ch.op, "update");
        assert.ok(Date.parse(ch.state.outs.restoredAt as string) > 0, "restoredAt records the restore");
        assert.deepEqual(await checkpointNames(dom.name), ["ml-1", "ml-2"]);
        assert.equal(await parentOf(dom.name, "ml-2"), "ml-1");
        const xml1 = await virshOk(["checkpoint-dumpxml", "--domain", dom.name, "--checkpointname", "ml-1", "--no-domain"]);
        assert.match(xml1, /<description>first<\/description>/);
        assert.match(
            xml1,
            new RegExp(`<creationTime>${Date.parse(m1.outs.creationTime as string) / 1000}</creationTime>`),
            "the original creation time",
        );

        // Lost again: refresh only reads and keeps it; the next up gives the chain back.
        await loseMetadata(dom, { start: true });
        const r2 = (await suite.engine.refresh(ch.state))!;
        assert.ok(r2, "refresh keeps the checkpoint");
        assert.equal(r2.outs.recordLost, true);
        assert.deepEqual(await checkpointNames(dom.name), [], "refresh only reads");
        const back = await suite.engine.change(r2, DomainCheckpointProvider, { domain: dom.name, checkpointName: "ml-2" });
        assert.equal(back.op, "update");
        assert.equal(back.state.outs.recordLost, false);
        assert.equal(back.state.outs.parent, "ml-1");
        assert.ok(Date.parse(back.state.outs.restoredAt as string) > 0, "restoredAt records the restore");
        assert.equal(typeof back.state.outs.changedBytes, "number");
        assert.ok((back.state.outs.changedBytes as number) >= 2 * CLUSTER, "the bitmap kept what was written before the loss");
        assert.deepEqual(await checkpointNames(dom.name), ["ml-1", "ml-2"]);
        const r1 = (await suite.engine.refresh(m1))!;
        assert.equal(r1.outs.restoredAt, null, "ml-1 was already back (restored as ml-2's parent)");
        assert.equal(r1.outs.recordLost, false);

        // And a later delete works: the bitmaps are removed, not leaked.
        await suite.engine.destroy(back.state);
        await suite.engine.destroy(r1);
        assert.deepEqual(await checkpointNames(dom.name), []);
        assert.deepEqual([...(await qmpBitmaps(dom.name)).keys()], []);
    });

    it("metadata loss, over SSH: restored on a shut-off domain once qemu-img shows the bitmap; not without its bitmap", async () => {
        const dom = await newDomain({ running: true, writer: true });
        const s = await up("off-restore", { connection: sshConnection(), domain: dom.name, checkpointName: "off-restore" });
        await guestWrites(dom, 1);
        await loseMetadata(dom, { start: false });
        assert.deepEqual(
            (await imageBitmaps(dom.disk)).map((b) => b.name),
            ["off-restore"],
        );
        const kept = (await suite.engine.refresh(s))!;
        assert.ok(kept, "refresh keeps the checkpoint");
        assert.equal(kept.outs.recordLost, true);
        assert.deepEqual(await checkpointNames(dom.name), [], "refresh only reads");
        const inputs = { connection: sshConnection(), domain: dom.name, checkpointName: "off-restore" };
        const r = (await suite.engine.change(kept, DomainCheckpointProvider, inputs)).state;
        assert.ok(Date.parse(r.outs.restoredAt as string) > 0);
        assert.equal(r.outs.recordLost, false);
        assert.equal(r.outs.changedBytes, s.outs.changedBytes, "shut off: the last measured value stays");
        assert.deepEqual(await checkpointNames(dom.name), ["off-restore"]);

        // Lost record and lost bitmap: nothing is resurrected.
        await virshOk(["start", "--domain", dom.name]);
        await loseMetadata(dom, { start: true });
        await removeBitmapBehindLibvirt(dom.name, "off-restore");
        assert.deepEqual([...(await qmpBitmaps(dom.name)).keys()], []);
        // Running: qemu holds a bitmap made since it started only in memory, and only libvirt's --redefine-validate (a write)
        // can tell whether it is there. So diff, which only reads, plans the update, and the update finds it gone and says so.
        let d = await suite.engine.diff(r.urn, r.id, r.outs, r.inputs);
        assert.equal(d.changes, "some");
        assert.deepEqual(d.replaces, []);
        const failed = await suite.engine.change(r, DomainCheckpointProvider, inputs).then(
            () => assert.fail("a record without its bitmap was given back"),
            (e: unknown) => e,
        );
        assert.ok(failed instanceof ProviderCallError, String(failed));
        assert.match(
            failed.message,
            /^checkpoint 'off-restore' of domain '.*' is gone and can't be restored \(.*\)\. Nothing was changed\. The next pulumi up creates it again\.$/,
        );
        assert.deepEqual(await checkpointNames(dom.name), [], "no record without its bitmap");
        // The engine keeps what the failed update learnt: the next diff plans a new checkpoint, still only reading.
        const learnt = { ...r, outs: failed.initFailure!.properties };
        assert.equal(learnt.outs.bitmapsHealthy, false);
        const again = await suite.engine.diff(r.urn, r.id, learnt.outs, r.inputs);
        assert.deepEqual(again.replaces, ["checkpointName"]);
        assert.equal(again.deleteBeforeReplace, true);
        assert.deepEqual(await checkpointNames(dom.name), [], "diff wrote nothing");
        // Shut off: the image shows the bitmap gone, so diff plans a new checkpoint by reading alone.
        await virshOk(["destroy", "--domain", dom.name]);
        d = await suite.engine.diff(r.urn, r.id, r.outs, r.inputs);
        assert.deepEqual(d.replaces, ["checkpointName"]);
        assert.equal(d.deleteBeforeReplace, true);
        assert.deepEqual(await checkpointNames(dom.name), [], "no record without its bitmap");
        assert.equal(await suite.engine.refresh(r), undefined, "refresh drops it");
        // The next up (the resource dropped from the state) makes a fresh checkpoint.
        await virshOk(["start", "--domain", dom.name]);
        const fresh = await up("off-restore", inputs);
        assert.notEqual(fresh.outs.creationTime, s.outs.creationTime);
        await suite.engine.destroy(fresh);
        assert.deepEqual(await checkpointNames(dom.name), []);
    });

    it("preview refuses what this libvirt would refuse (9.0 and 11.3 alike), with the reason, and leaves the VMs alone", async () => {
        const off = await newDomain();
        const direct = await virshLocal(["checkpoint-create-as", "--domain", off.name, "--name", "x"]);
        assert.match(direct.stderr, /cannot create checkpoint for inactive domain/);
        observe("checkpoint-create-offline", direct.code === 0 ? "works" : "refused");
        assert.match(
            await failuresOf({ domain: off.name, checkpointName: "x" }),
            new RegExp(
                `^domain: domain '.*' is shut off: libvirt ${re(lab.libvirtVersion)} creates checkpoints only while the domain runs \\('cannot create checkpoint for inactive domain'\\)\\. Start the domain first$`,
            ),
        );
        const raw = await newDomain({ format: "raw", running: true });
        assert.match(
            await failuresOf({ domain: raw.name, checkpointName: "x" }),
            /^disks: a checkpoint is a dirty bitmap kept inside a qcow2 image, but disk vda \(.*disk\.raw\) is raw\. Leave it out with disks: \[\{ name: 'vda', checkpoint: 'no' \}\]/,
        );
        assert.match(
            await failuresOf({ domain: raw.name, checkpointName: "x", disks: [{ name: "vda", checkpoint: "no" }] }),
            /^disks: no disk of domain '.*' would be in the checkpoint$/,
        );
        const run = await newDomain({ running: true });
        assert.match(
            await failuresOf({ domain: run.name, checkpointName: "q", quiesce: true }),
            new RegExp(`^quiesce: libvirt ${re(lab.libvirtVersion)}'s QEMU driver can't quiesce a checkpoint`),
        );
        assert.match(
            await failuresOf({ domain: run.name, checkpointName: "b", disks: [{ name: "vda", checkpoint: "bitmap", bitmap: "other" }] }),
            /^disks\[0\]\.bitmap: libvirt's QEMU driver names every bitmap after its checkpoint .*set it to 'b'/,
        );
        assert.match(
            await failuresOf({ domain: run.name, checkpointName: "b", disks: [{ name: "vdz", checkpoint: "bitmap" }] }),
            /^disks\[0\]\.name: domain '.*' has no disk 'vdz' \(its disks: vda\)/,
        );
        assert.match(
            await failuresOf({ domain: "no-such-domain", checkpointName: "x" }),
            new RegExp(`^domain: no domain 'no-such-domain' on ${re(defaultTarget())}`),
        );
        assert.equal(
            await failuresOf({ domain: run.name, checkpointName: 'a"b' }),
            `checkpointName: must not contain '"' or '\\': libvirt accepts them but saves no data into qcow2 on a running domain, and a later revert kills the VM`,
            "one message per problem",
        );
        assert.match(
            await failuresOf({ domain: run.name, checkpointName: "with space" }),
            /^checkpointName: may contain only letters, digits, '_', '-' and '\.', and must not start with '\.': libvirt's checkpoint schema allows nothing else/,
        );
        assert.equal(await failuresOf({ domain: run.name, checkpointName: "fine" }), "");
        // Unknown values at preview are tolerated; what is known is still validated.
        assert.equal(await failuresOf({ domain: UNKNOWN, checkpointName: "x" }), "");
        assert.match(await failuresOf({ domain: UNKNOWN, checkpointName: "x", deletion: "never" }), /^deletion: must be 'delete'/);
        // An existing checkpoint of a domain that is shut off now is no failure: nothing would be created.
        const olds = await suite.engine.programInputs(DomainCheckpointProvider, { domain: off.name, checkpointName: "x" });
        assert.equal(await failuresOf({ domain: off.name, checkpointName: "x", description: "new text" }, olds), "");
        // Nothing happened to any VM.
        for (const d of [off, raw, run]) assert.deepEqual(await checkpointNames(d.name), []);
        assert.equal(await domstate(off.name), "shut off");
        assert.equal(await domstate(raw.name), "running");
        assert.equal(await domstate(run.name), "running");
        await expectCallError(up("refused", { domain: off.name, checkpointName: "x" }), /check failed .*is shut off/);
    });

    describe("update, adopt, deletion: 'metadata'", () => {
        let dom: TestDomain;
        before(async () => {
            dom = await newDomain({ running: true });
        });

        it("updates the description in place (redefine), without replacing; replaces on a new name", async () => {
            const s = await up("desc", { domain: dom.name, checkpointName: "desc", description: "first" });
            const hostile = "quotes \" ' `x` $(touch /tmp/ckpt-canary) ; | & > < ]]> \n second line ✓";
            const ch = await suite.engine.change(s, DomainCheckpointProvider, {
                domain: dom.name,
                checkpointName: "desc",
                description: hostile,
            });
            assert.equal(ch.op, "update");
            assert.deepEqual(ch.diff.replaces, []);
            assert.equal(ch.state.outs.description, hostile);
            assert.equal(ch.state.outs.creationTime, s.outs.creationTime);
            assert.match(await virshOk(["checkpoint-dumpxml", "--domain", dom.name, "--checkpointname", "desc"]), /second line ✓/);
            assert.equal(fs.existsSync("/tmp/ckpt-canary"), false);
            let d = await suite.engine.diff(
                s.urn,
                s.id,
                ch.state.outs,
                await suite.engine.programInputs(DomainCheckpointProvider, {
                    domain: dom.uuid,
                    checkpointName: "desc",
                    description: hostile,
                }),
            );
            assert.equal(d.changes, "none", "the same domain by UUID is no change");
            d = await suite.engine.diff(
                s.urn,
                s.id,
                ch.state.outs,
                await suite.engine.programInputs(DomainCheckpointProvider, {
                    domain: dom.name,
                    checkpointName: "desc2",
                    description: hostile,
                }),
            );
            assert.deepEqual(d.replaces, ["checkpointName"]);
            assert.equal(d.deleteBeforeReplace, false);
            d = await suite.engine.diff(
                s.urn,
                s.id,
                ch.state.outs,
                await suite.engine.programInputs(DomainCheckpointProvider, {
                    domain: dom.name,
                    checkpointName: "desc",
                    description: hostile,
                    connection: sameHostConnection(),
                }),
            );
            assert.deepEqual(d.replaces, [], "new credentials for the same host: no new checkpoint");
            await suite.engine.destroy(ch.state);
            assert.deepEqual(await checkpointNames(dom.name), []);
        });

        it("adopts an existing checkpoint only with adopt: true and only when it matches", async () => {
            await virshOk(["checkpoint-create-as", "--domain", dom.name, "--name", "existing"]);
            await expectCallError(
                up("no-adopt", { domain: dom.name, checkpointName: "existing" }),
                /checkpoint 'existing' already exists on domain '.*'.*Set adopt: true to take it over, or choose another checkpointName/,
            );
            const s = await up("adopt", { domain: dom.name, checkpointName: "existing", adopt: true, description: "adopted" });
            assert.equal(s.outs.adopted, true);
            assert.equal(s.outs.description, "adopted");
            await suite.engine.destroy(s);
            assert.deepEqual(await checkpointNames(dom.name), []);
        });

        it("a create that finds its name taken by its own checkpoint (the maker's mark: a run cut off before the engine recorded it) takes it over; another's needs adopt", async () => {
            const urn = suite.engine.urn("pulumi-nodejs:dynamic/libvirt-snapshots:DomainCheckpoint", "own");
            const first = await up("own", { domain: dom.name, checkpointName: "own", __maker: urn });
            assert.match(
                await virshOk(["checkpoint-dumpxml", "--domain", dom.name, "--checkpointname", "own"]),
                /<(\w+):maker xmlns:\1="urn:pulumi-libvirt-snapshots:maker" resource="[^"]*DomainCheckpoint::own" name="own"\/>/,
            );
            // The engine lost the first create: the same resource creates again.
            const again = await up("own", { domain: dom.name, checkpointName: "own", __maker: urn });
            assert.equal(again.outs.adopted, false, "its own checkpoint, not adopted");
            assert.equal(again.outs.creationTime, first.outs.creationTime, "taken over, not made again");
            assert.deepEqual(await checkpointNames(dom.name), ["own"]);
            await expectCallError(
                up("other", { domain: dom.name, checkpointName: "own", __maker: `${urn}-other` }),
                /checkpoint 'own' already exists on domain '.*'.*Set adopt: true to take it over, or choose another checkpointName/,
            );
            await suite.engine.destroy(again);
            assert.deepEqual(await checkpointNames(dom.name), []);
        });

        it("deletion: 'metadata' keeps the bitmap; creating that name again then says why it can't", async () => {
            const s = await up("meta", { domain: dom.name, checkpointName: "meta", deletion: "metadata" });
            await suite.engine.destroy(s);
            assert.deepEqual(await checkpointNames(dom.name), []);
            assert.deepEqual([...(await qmpBitmaps(dom.name)).keys()], ["meta"], "the bitmap stays");
            await expectCallError(
                up("meta-again", { domain: dom.name, checkpointName: "meta" }),
                /already holds a dirty bitmap named 'meta', but libvirt has no checkpoint 'meta'.*Nothing was created/,
            );
            assert.deepEqual(await checkpointNames(dom.name), []);
            await removeBitmapBehindLibvirt(dom.name, "meta");
        });

        it("a bitmap lost behind libvirt's back: refresh reports changedBytes null (never 0), and delete still removes the record", async () => {
            const s = await up("broken", { domain: dom.name, checkpointName: "broken" });
            await removeBitmapBehindLibvirt(dom.name, "broken");
            const r = (await suite.engine.refresh(s))!;
            assert.equal(r.outs.changedBytes, null);
            assert.deepEqual(
                (r.outs.disks as Array<Record<string, unknown>>).map((d) => [d.name, d.changedBytes]),
                [["vda", null]],
            );
            await suite.engine.destroy(r);
            assert.deepEqual(await checkpointNames(dom.name), []);
        });

        it("after a create that was cut off (an init failure's partial state), the next up finishes the job either way", async () => {
            // What create reports when the connection drops mid-way: the id and what is known, no XML.
            const partial = (name: string) => ({
                domain: dom.name,
                checkpointName: name,
                deletion: "delete",
                domainName: dom.name,
                domainUuid: dom.uuid,
                libvirtVersion: lab.libvirtVersion,
                adopted: false,
                restoredAt: null,
                declared: { domain: dom.name, checkpointName: name, quiesce: false, deletion: "delete", adopt: false },
            });
            const stateOf = async (name: string) => {
                const inputs = await suite.engine.programInputs(DomainCheckpointProvider, { domain: dom.name, checkpointName: name });
                return {
                    urn: suite.engine.urn("pulumi-nodejs:dynamic:Resource", name),
                    id: `${dom.uuid}/${name}`,
                    inputs,
                    outs: { ...partial(name), __provider: inputs.__provider },
                };
            };
            // (a) libvirt never made it: the update creates it.
            const a = await stateOf("cut-a");
            let ch = await suite.engine.change(a, DomainCheckpointProvider, { domain: dom.name, checkpointName: "cut-a" });
            assert.equal(ch.op, "update");
            assert.deepEqual(await checkpointNames(dom.name), ["cut-a"]);
            assert.match(ch.state.outs.xml as string, /<name>cut-a<\/name>/);
            await suite.engine.destroy(ch.state);
            // (b) libvirt made it, the read-back was cut off: the update reads it.
            await virshOk(["checkpoint-create-as", "--domain", dom.name, "--name", "cut-b"]);
            const b = await stateOf("cut-b");
            ch = await suite.engine.change(b, DomainCheckpointProvider, { domain: dom.name, checkpointName: "cut-b" });
            assert.equal(ch.op, "update");
            assert.equal(typeof ch.state.outs.changedBytes, "number");
            assert.deepEqual(await checkpointNames(dom.name), ["cut-b"]);
            // Destroy of a partial state: removes what exists, and succeeds when nothing does.
            await suite.engine.destroy(b);
            await suite.engine.destroy(await stateOf("cut-c"));
            assert.deepEqual(await checkpointNames(dom.name), []);
        });

        it("a checkpoint already deleted by hand deletes successfully", async () => {
            const s = await up("gone", { domain: dom.name, checkpointName: "gone" });
            await virshOk(["checkpoint-delete", "--domain", dom.name, "--checkpointname", "gone"]);
            await suite.engine.destroy(s);
            assert.deepEqual(await checkpointNames(dom.name), []);
        });
    });

    it("six checkpoints of one domain, created and then deleted concurrently, take turns (one lock per domain)", async () => {
        const dom = await newDomain({ running: true });
        const states = await Promise.all(
            Array.from({ length: 6 }, (_, i) => up(`par-${i}`, { domain: dom.name, checkpointName: `par-${i}` })),
        );
        assert.equal((await checkpointNames(dom.name)).length, 6);
        await Promise.all(states.map((s) => suite.engine.destroy(s)));
        assert.deepEqual(await checkpointNames(dom.name), []);
        assert.deepEqual([...(await qmpBitmaps(dom.name)).keys()], []);
        assert.equal(await domstate(dom.name), "running");
    });
});
