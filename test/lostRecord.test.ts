// The record is lost but the data is still there: another tool undefines a domain
// (`virsh undefine --snapshots-metadata --checkpoints-metadata`) and defines it again
// under a NEW UUID, as a replaced Terraform or Pulumi domain resource does. libvirt
// then has no record of the domain's snapshots and checkpoints; the images still hold
// them. Through the engine path, for internal snapshots (running and shut off),
// external snapshots, checkpoints, RestorePoint members and a SnapshotRevert: refresh
// keeps the resource with the domain's new UUID, the next up gives libvirt its record
// back (under the new UUID), a revert brings the data back (qemu-io patterns), and
// destroy removes the snapshot from the image too. Where the data is gone, it says so.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainCheckpointProvider, DomainSnapshotProvider, RestorePointProvider, SnapshotRevertProvider } from "pulumi-libvirt-snapshots";
import type { ResourceState } from "./harness/engine";
import { engineSuite } from "./support/fixture";
import {
    MiB,
    checkpointNames,
    domstate,
    expectCallError,
    hostHasExternalSnapshot,
    qcow2Snapshots,
    re,
    shutOff,
    snapshotNames,
    sshConnection,
} from "./support/helpers";
import { allLabHosts, hostRun, loadLab, qemuImgInfo, qemuIoRead, qemuIoWrite, virshOk, type TestDomain } from "./support/lab";

const lab = loadLab();
const A = 0xaa,
    B = 0xbb;

/**
 * What a replaced domain resource does: the domain shut off, undefined with its snapshots' and checkpoints'
 * metadata, and defined again from its own XML without a <uuid>, so libvirt gives it a new one. Returns it.
 */
async function redefineUnderNewUuid(dom: TestDomain, opts: { start: boolean }): Promise<string> {
    const xml = await virshOk(["dumpxml", "--inactive", "--domain", dom.name]);
    const withoutUuid = xml.replace(/^\s*<uuid>[^<]*<\/uuid>\s*\n/m, "");
    assert.notEqual(withoutUuid, xml, "the domain XML had a <uuid>");
    const file = path.join(dom.dir, "redefined.xml");
    fs.writeFileSync(file, withoutUuid);
    await shutOff(dom);
    await virshOk(["undefine", "--domain", dom.name, "--snapshots-metadata", "--checkpoints-metadata"]);
    await virshOk(["define", "--file", file]);
    if (opts.start) await virshOk(["start", "--domain", dom.name]);
    const uuid = (await virshOk(["domuuid", "--domain", dom.name])).trim();
    assert.notEqual(uuid, dom.uuid, "libvirt gave the domain a new UUID");
    assert.deepEqual(await snapshotNames(dom.name), [], "libvirt lost the snapshot records");
    assert.deepEqual(await checkpointNames(dom.name), [], "libvirt lost the checkpoint records");
    return uuid;
}

/** The UUID inside libvirt's record of a snapshot (its <domain>). */
async function recordUuid(domain: string, snapshot: string): Promise<string> {
    const xml = await virshOk(["snapshot-dumpxml", "--domain", domain, "--snapshotname", snapshot]);
    const m = /<domain[^>]*>[\s\S]*?<uuid>([^<]+)<\/uuid>/.exec(xml);
    assert.ok(m, "the record has a <domain> with a <uuid>");
    return m[1]!;
}

async function currentSnapshot(domain: string): Promise<string> {
    return (await virshOk(["snapshot-current", "--domain", domain, "--name"])).trim();
}

/** The image the domain's vda uses now (the top of its chain). */
async function activeDisk(domain: string): Promise<string> {
    const m = /^\s*vda\s+(\S+)\s*$/m.exec(await virshOk(["domblklist", "--domain", domain]));
    assert.ok(m, `domain ${domain} has no vda`);
    return m[1]!;
}

describe("Lost records: a domain defined again under a new UUID (engine path, real lab)", function () {
    this.timeout(300_000);
    const suite = engineSuite("lost-");
    const { newDomain } = suite;

    const snapshot = (name: string, inputs: Record<string, unknown>) => suite.up(name, DomainSnapshotProvider, inputs);
    const revert = (name: string, inputs: Record<string, unknown>) => suite.up(name, SnapshotRevertProvider, inputs);

    /** The next up after the loss: an update (never a replace) that gives libvirt its record back. */
    async function upGivesRecordBack(s: ResourceState, inputs: Record<string, unknown>, dom: TestDomain, newUuid: string) {
        const ch = await suite.engine.change(s, DomainSnapshotProvider, inputs);
        assert.equal(ch.op, "update", `an update, not a replace (${ch.diff.replaces.join(", ")})`);
        assert.deepEqual(ch.diff.replaces, []);
        assert.ok(Date.parse(ch.state.outs.restoredAt as string) > 0, "restoredAt records it");
        assert.equal(ch.state.outs.recordLost, false);
        assert.equal(ch.state.outs.domainUuid, newUuid);
        assert.equal(ch.state.id, s.id, "same resource");
        assert.ok((await snapshotNames(dom.name)).includes(s.outs.snapshotName as string), "libvirt lists it again");
        assert.equal(await recordUuid(dom.name, s.outs.snapshotName as string), newUuid, "under the domain's new UUID");
        // Nothing more to do: the next up is a no-op.
        const again = await suite.engine.change(ch.state, DomainSnapshotProvider, inputs);
        assert.equal(again.op, "same");
        return ch.state;
    }

    it("internal snapshot of a shut-off domain: refresh keeps it, up gives the record back, a revert brings the data back, destroy removes it from the image", async () => {
        const dom = await newDomain();
        await qemuIoWrite(dom.disk, A, 0, MiB);
        const inputs = { domain: dom.name, snapshotName: "lost-off" };
        const s = await snapshot("int-off", inputs);
        assert.match(s.outs.xml as string, /^<domainsnapshot>[\s\S]*<name>lost-off<\/name>[\s\S]*<domain type=/, "the record is kept");
        await qemuIoWrite(dom.disk, B, 0, MiB);
        const newUuid = await redefineUnderNewUuid(dom, { start: false });
        assert.ok((await qcow2Snapshots(dom.disk)).includes("lost-off"), "the data is still in the image");

        // A revert declared now is refused at check, saying how the record comes back.
        assert.match(
            await suite.failuresOf(SnapshotRevertProvider, { domain: dom.name, snapshot: "lost-off" }),
            new RegExp(
                `^snapshot: domain '${re(dom.name)}' has no snapshot 'lost-off' \\(it has no snapshots\\)\\. If libvirt lost its record`,
            ),
        );

        const r = (await suite.engine.refresh(s))!;
        assert.ok(r, "refresh keeps the snapshot");
        assert.equal(r.outs.recordLost, true);
        assert.equal(r.outs.domainUuid, newUuid);
        assert.equal(r.outs.creationTime, s.outs.creationTime);
        assert.deepEqual(await snapshotNames(dom.name), [], "refresh only reads");

        const u = await upGivesRecordBack(r, inputs, dom, newUuid);
        assert.equal(await currentSnapshot(dom.name), "lost-off", "it was the current snapshot, and is again");
        // The same name on another host is another domain: a replacement, as ever (nothing is asked of either host).
        const other = allLabHosts().find((h) => h.name !== lab.name)!;
        const elsewhere = await suite.engine.programInputs(DomainSnapshotProvider, { ...inputs, connection: sshConnection(other) });
        assert.deepEqual((await suite.engine.diff(u.urn, u.id, u.outs, elsewhere)).replaces, ["connection"]);
        const info = await virshOk(["snapshot-info", "--domain", dom.name, "--snapshotname", "lost-off"]);
        assert.match(info, /^State:\s+shutoff$/m);

        const rv = await revert("rev-off", { domain: dom.name, snapshot: "lost-off" });
        assert.equal(rv.outs.domainUuid, newUuid);
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true, "the data from before the snapshot is back");

        await suite.engine.destroy(u);
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(await qcow2Snapshots(dom.disk), [], "gone from the image too");
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true, "the data is kept");
    });

    it("internal snapshot of a running domain (with memory): given back under the new UUID, reverted to a running domain, removed from the image", async () => {
        const dom = await newDomain();
        await qemuIoWrite(dom.disk, A, 0, MiB);
        await virshOk(["start", "--domain", dom.name]);
        const inputs = { domain: dom.name, snapshotName: "lost-run" };
        const s = await snapshot("int-run", inputs);
        assert.equal(s.outs.state, "running");
        assert.equal(s.outs.memory, "internal");
        await shutOff(dom);
        await qemuIoWrite(dom.disk, B, 0, MiB);
        const newUuid = await redefineUnderNewUuid(dom, { start: true });

        // The next up without a refresh first: diff finds the record lost and the data there.
        const u = await upGivesRecordBack(s, inputs, dom, newUuid);
        assert.equal(
            (await virshOk(["snapshot-info", "--domain", dom.name, "--snapshotname", "lost-run"])).match(/^State:\s+(\S+)/m)?.[1],
            "running",
        );

        const rv = await revert("rev-run", { domain: dom.name, snapshot: "lost-run" });
        assert.equal(rv.outs.domainState, "running", "back to the running state it was taken in");
        assert.equal(await domstate(dom.name), "running");
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true, "the data from before the snapshot is back");
        // The revert made the snapshot's persistent definition the domain's own: it must carry the UUID of now.
        const persistent = await virshOk(["dumpxml", "--inactive", "--domain", dom.name]);
        assert.equal(/<uuid>([^<]+)<\/uuid>/.exec(persistent)?.[1], newUuid, "the persistent definition has the domain's UUID");
        assert.equal((await virshOk(["domuuid", "--domain", dom.name])).trim(), newUuid);

        const r = (await suite.engine.refresh(u))!;
        assert.equal(r.outs.recordLost, false);
        await suite.engine.destroy(r);
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(await qcow2Snapshots(dom.disk), [], "gone from the image too (qemu-img info -U)");
    });

    it("a chain given back child first, each by its own resource: the child comes back without its lost parent and is re-attached when the parent's resource gives it back", async () => {
        const dom = await newDomain();
        const p = await snapshot("chain-1", { domain: dom.name, snapshotName: "lost-1" });
        const c = await snapshot("chain-2", { domain: dom.name, snapshotName: "lost-2" });
        assert.equal(c.outs.parent, "lost-1");
        assert.equal(c.outs.lineage, undefined, "only its own record is kept: the state does not grow with the chain");
        const newUuid = await redefineUnderNewUuid(dom, { start: false });
        const c2 = await upGivesRecordBack(c, { domain: dom.name, snapshotName: "lost-2" }, dom, newUuid);
        assert.deepEqual(await snapshotNames(dom.name), ["lost-2"], "the parent is its own resource's to give back");
        assert.equal(c2.outs.parent, null, "given back without its parent, which has no record yet");
        assert.equal(await currentSnapshot(dom.name), "lost-2");
        const p2 = await upGivesRecordBack(p, { domain: dom.name, snapshotName: "lost-1" }, dom, newUuid);
        assert.deepEqual(await snapshotNames(dom.name), ["lost-1", "lost-2"], "nothing duplicated");
        assert.equal(
            (await virshOk(["snapshot-parent", "--domain", dom.name, "--snapshotname", "lost-2"])).trim(),
            "lost-1",
            "re-attached",
        );
        assert.equal(await currentSnapshot(dom.name), "lost-2", "still the current one");
        const cr = (await suite.engine.refresh(c2))!;
        assert.equal(cr.outs.parent, "lost-1");
        assert.equal(cr.outs.creationTime, c.outs.creationTime, "libvirt's record as it was, creation time included");
        await suite.engine.destroy(cr);
        await suite.engine.destroy(p2);
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(await qcow2Snapshots(dom.disk), []);
    });

    it("the data gone too (deleted from the image), or a 0.1.0 state without the record: reported gone, never made up", async () => {
        const dom = await newDomain();
        const inputs = { domain: dom.name, snapshotName: "lost-gone" };
        const s = await snapshot("gone", inputs);
        const old = await snapshot("old-state", { domain: dom.name, snapshotName: "lost-old" });
        await redefineUnderNewUuid(dom, { start: false });
        const del = await hostRun("/usr/bin/qemu-img", ["snapshot", "-d", "lost-gone", dom.disk]);
        assert.equal(del.code, 0, del.stderr);
        assert.deepEqual(await qcow2Snapshots(dom.disk), ["lost-old"]);

        const d = await suite.engine.diff(s.urn, s.id, s.outs, s.inputs);
        assert.deepEqual(d.replaces, ["snapshotName"], "planned anew");
        assert.equal(await suite.engine.refresh(s), undefined, "refresh drops it");
        await expectCallError(
            suite.engine.update(s.urn, s.id, s.outs, s.inputs),
            /snapshot 'lost-gone' of domain '.*' is gone and can't be given back: libvirt has no record of it, and its data is gone: no image in the chain of disk vda/,
        );
        assert.deepEqual(await snapshotNames(dom.name), [], "no record without its data");

        // State recorded by 0.1.0 has no xml: as before, gone (refresh drops it, diff replaces).
        const { xml: _x, recordLost: _r, restoredAt: _t, ...outs010 } = old.outs;
        const old010 = { ...old, outs: outs010 };
        assert.equal(await suite.engine.refresh(old010), undefined);
        assert.deepEqual((await suite.engine.diff(old.urn, old.id, outs010, old.inputs)).replaces, ["snapshotName"]);
        await suite.engine.destroy(old010);
        assert.deepEqual(await qcow2Snapshots(dom.disk), ["lost-old"], "0.1.0 state can't give it back; the data is left as it was");
    });

    it("external snapshot whose overlay still exists: given back under the new UUID; reverted where the host can (11.3), refused where not (9.0); destroy follows the delete rules", async () => {
        const canRevert = await hostHasExternalSnapshot();
        const dom = await newDomain();
        await qemuIoWrite(dom.disk, A, 0, MiB);
        const overlay = path.join(dom.dir, "overlay.qcow2");
        const inputs = {
            domain: dom.name,
            snapshotName: "lost-ext",
            kind: "external",
            disks: [{ name: "vda", snapshot: "external", file: overlay }],
        };
        const s = await snapshot("ext", inputs);
        assert.equal(await activeDisk(dom.name), overlay);
        await qemuIoWrite(overlay, B, 0, MiB);
        const newUuid = await redefineUnderNewUuid(dom, { start: false });
        assert.equal(await activeDisk(dom.name), overlay, "the domain still runs on the overlay");

        const r = (await suite.engine.refresh(s))!;
        assert.ok(r, "refresh keeps it");
        assert.equal(r.outs.recordLost, true);
        assert.equal(r.outs.domainUuid, newUuid);
        assert.deepEqual(r.outs.diskFiles, { vda: overlay });
        const u = await upGivesRecordBack(r, inputs, dom, newUuid);
        assert.equal(await currentSnapshot(dom.name), "lost-ext");

        if (canRevert) {
            const rv = await revert("rev-ext", { domain: dom.name, snapshot: "lost-ext" });
            assert.equal(rv.outs.domainUuid, newUuid);
            const now = await activeDisk(dom.name);
            assert.notEqual(now, overlay, "libvirt made a new overlay on the snapshot's base");
            assert.equal(await qemuIoRead(now, A, 0, MiB), true, "the data from before the snapshot is back");
            await suite.engine.destroy(u);
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.equal(await qemuIoRead(await activeDisk(dom.name), A, 0, MiB), true, "the data is kept");
        } else {
            assert.match(
                await suite.failuresOf(SnapshotRevertProvider, { domain: dom.name, snapshot: "lost-ext" }),
                new RegExp(
                    `^snapshot: 'lost-ext' is an external snapshot, and libvirt ${re(lab.libvirtVersion)} can't revert to external snapshots`,
                ),
            );
            // A leaf of a shut-off domain: libvirt merges the overlay into the base and removes it.
            await suite.engine.destroy(u);
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.equal(await activeDisk(dom.name), dom.disk, "back on the base image");
            assert.equal(fs.existsSync(overlay), false, "the overlay was merged and removed");
            assert.equal(await qemuIoRead(dom.disk, B, 0, MiB), true, "the data written after the snapshot is kept (merged)");
        }
        const info = await qemuImgInfo(await activeDisk(dom.name), { backingChain: true });
        assert.ok(
            info.every((i) => !i.filename.endsWith("overlay.qcow2")),
            "the snapshot's overlay is no longer in the chain",
        );
    });

    it("external snapshot with memory of a running domain: the memory file is part of the data; given back, then destroy merges the overlay and no memory file is left", async () => {
        const dom = await newDomain();
        await qemuIoWrite(dom.disk, A, 0, MiB);
        await virshOk(["start", "--domain", dom.name]);
        const overlay = path.join(dom.dir, "overlay-mem.qcow2");
        const inputs = {
            domain: dom.name,
            snapshotName: "lost-mem",
            kind: "external",
            memory: "external",
            disks: [{ name: "vda", snapshot: "external", file: overlay }],
        };
        const s = await snapshot("ext-mem", inputs);
        const memoryFile = s.outs.memoryFile as string;
        assert.equal(fs.existsSync(memoryFile), true);
        const newUuid = await redefineUnderNewUuid(dom, { start: true });
        assert.equal(await activeDisk(dom.name), overlay);

        const r = (await suite.engine.refresh(s))!;
        assert.ok(r, "refresh keeps it: overlay and memory file are there");
        assert.equal(r.outs.recordLost, true);
        const u = await upGivesRecordBack(r, inputs, dom, newUuid);
        assert.match(
            await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "lost-mem"]),
            new RegExp(`<memory snapshot='external' file='${re(memoryFile)}'/>`),
        );

        // A leaf of a running domain: both versions commit the overlay into the base.
        await suite.engine.destroy(u);
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.equal(await activeDisk(dom.name), dom.disk, "back on the base image");
        assert.equal(fs.existsSync(overlay), false, "the overlay was merged and removed");
        assert.equal(fs.existsSync(memoryFile), false, "no memory file is left");
        assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true, "the data is kept");
    });

    it("checkpoint under a new UUID: diff and refresh only read; up gives the record back; destroy removes the bitmap", async () => {
        const dom = await newDomain({ running: true });
        const inputs = { domain: dom.name, checkpointName: "lost-ckpt" };
        const s = await suite.up("ckpt", DomainCheckpointProvider, inputs);
        const newUuid = await redefineUnderNewUuid(dom, { start: true });

        const d = await suite.engine.diff(s.urn, s.id, s.outs, s.inputs);
        assert.deepEqual(d.replaces, [], "the same domain (same name, same connection): no replacement");
        assert.equal(d.changes, "some", "an update gives the record back");
        assert.deepEqual(await checkpointNames(dom.name), [], "diff only reads (preview changes nothing)");

        const ch = await suite.engine.change(s, DomainCheckpointProvider, inputs);
        assert.equal(ch.op, "update", `an update, not a replace (${ch.diff.replaces.join(", ")})`);
        assert.equal(ch.state.id, s.id, "same resource");
        assert.equal(ch.state.outs.domainUuid, newUuid);
        assert.ok(Date.parse(ch.state.outs.restoredAt as string) > 0, "restoredAt records it");
        assert.deepEqual(await checkpointNames(dom.name), ["lost-ckpt"], "the update gave the record back");
        const xml = await virshOk(["checkpoint-dumpxml", "--domain", dom.name, "--checkpointname", "lost-ckpt"]);
        assert.match(xml, new RegExp(`<uuid>${newUuid}</uuid>`), "under the domain's new UUID");
        assert.equal((await suite.engine.change(ch.state, DomainCheckpointProvider, inputs)).op, "same", "nothing more to do");

        // Lost again: refresh only reads, and keeps it for the next up to give back.
        await redefineUnderNewUuid({ ...dom, uuid: newUuid }, { start: true });
        const r = (await suite.engine.refresh(ch.state))!;
        assert.ok(r, "refresh keeps the checkpoint");
        assert.equal(r.outs.recordLost, true);
        assert.equal(r.outs.bitmapsHealthy, null, "not known while libvirt has no record");
        assert.notEqual(r.outs.domainUuid, newUuid);
        assert.equal(r.outs.domainUuid, (await virshOk(["domuuid", "--domain", dom.name])).trim());
        assert.deepEqual(await checkpointNames(dom.name), [], "refresh only reads");
        const back = await suite.engine.change(r, DomainCheckpointProvider, inputs);
        assert.equal(back.op, "update");
        assert.equal(back.state.outs.recordLost, false);
        assert.equal(back.state.outs.bitmapsHealthy, true);
        assert.deepEqual(await checkpointNames(dom.name), ["lost-ckpt"]);

        await suite.engine.destroy(back.state);
        assert.deepEqual(await checkpointNames(dom.name), []);
        await shutOff(dom);
        assert.deepEqual((await qemuImgInfo(dom.disk))["format-specific"]?.data.bitmaps ?? [], [], "the bitmap is gone from the image");
    });

    it("RestorePoint: its members are kept by refresh, given back by the next up under their new UUIDs, reverted, and removed from the images", async () => {
        const doms = await suite.newDomains(2);
        for (const d of doms) await qemuIoWrite(d.disk, A, 0, MiB);
        const inputs = { domains: doms.map((d) => d.name), snapshotName: "lost-rp", consistency: "independent" };
        const rp = await suite.up("rp", RestorePointProvider, inputs);
        for (const d of doms) await qemuIoWrite(d.disk, B, 0, MiB);
        const newUuids = [];
        for (const d of doms) newUuids.push(await redefineUnderNewUuid(d, { start: false }));

        const r = (await suite.engine.refresh(rp))!;
        assert.ok(r, "refresh keeps the restore point");
        const members = r.outs.snapshots as Array<Record<string, unknown>>;
        assert.deepEqual(
            members.map((m) => [m.domainUuid, m.recordLost]),
            newUuids.map((u) => [u, true]),
        );
        for (const d of doms) assert.deepEqual(await snapshotNames(d.name), [], "refresh only reads");

        const ch = await suite.engine.change(r, RestorePointProvider, inputs);
        assert.equal(ch.op, "update", `an update, not a replace (${ch.diff.replaces.join(", ")})`);
        const after = ch.state.outs.snapshots as Array<Record<string, unknown>>;
        assert.deepEqual(
            after.map((m) => [m.domainUuid, m.recordLost ?? false]),
            newUuids.map((u) => [u, false]),
        );
        for (const [i, d] of doms.entries()) {
            assert.deepEqual(await snapshotNames(d.name), ["lost-rp"]);
            assert.equal(await recordUuid(d.name, "lost-rp"), newUuids[i]);
        }
        const again = await suite.engine.change(ch.state, RestorePointProvider, inputs);
        assert.equal(again.op, "same", "nothing left to do");

        for (const d of doms) {
            await revert(`rp-rev-${d.name}`, { domain: d.name, snapshot: "lost-rp" });
            assert.equal(await qemuIoRead(d.disk, A, 0, MiB), true, "the data from before the restore point is back");
        }
        await suite.engine.destroy(ch.state);
        for (const d of doms) {
            assert.deepEqual(await snapshotNames(d.name), []);
            assert.deepEqual(await qcow2Snapshots(d.disk), [], "gone from the image too");
        }
    });

    it("destroy without an up first: a lost record is given back and the snapshot removed from the image, never leaked", async () => {
        const dom = await newDomain();
        const s = await snapshot("destroy-only", { domain: dom.name, snapshotName: "lost-destroy" });
        const meta = await snapshot("destroy-meta", { domain: dom.name, snapshotName: "lost-meta", deletion: "metadata" });
        await redefineUnderNewUuid(dom, { start: false });
        await suite.engine.destroy(s);
        await suite.engine.destroy(meta);
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(
            await qcow2Snapshots(dom.disk),
            ["lost-meta"],
            "deletion 'delete' removed its data; 'metadata' keeps the data, as declared",
        );
    });
});
