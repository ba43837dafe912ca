// quiesce on a real Linux guest (scripts/lab/guest): qemu-guest-agent freezes the
// guest's ext4 for the snapshot and thaws it afterwards, also when the snapshot
// fails. Evidence from outside the guest: the agent's guest-fsfreeze-status, the
// writer's counter on the disk, and the ext4 in the snapshot's image, which a
// freeze leaves clean (no journal to replay) and a plain snapshot of a writing
// guest does not.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainSnapshotProvider, RestorePointProvider } from "pulumi-libvirt-snapshots";
import { engineSuite } from "./support/fixture";
import { domstate, expectCallError, snapshotNames, sshConnection } from "./support/helpers";
import { guestDisk, loadLab, makeGuestDomain, sleep, virshOk, type TestDomain } from "./support/lab";
import { stopWhenStartedInWorker } from "./support/stopWhenStarted";
import { tcpProxy } from "./support/tcpProxy";

async function freezeStatus(dom: TestDomain): Promise<string> {
    return (JSON.parse(await virshOk(["qemu-agent-command", dom.name, '{"execute":"guest-fsfreeze-status"}'])) as { return: string })
        .return;
}

/** Waits until the guest's writer has moved past `above`, read from the active disk. */
async function writerPast(dom: TestDomain, disk: string, above: number): Promise<number> {
    for (const until = Date.now() + 30_000; Date.now() < until; await sleep(300)) {
        const c = guestDisk(disk).counter;
        if (c > above) return c;
    }
    assert.fail(`the guest's writer did not get past ${above} on ${disk} within 30 s`);
}

describe("quiesce on a real guest (engine path, qemu-guest-agent)", function () {
    this.timeout(300_000);
    const suite = engineSuite("labtmp-guest-");
    let dom: TestDomain;
    before(async function () {
        this.timeout(180_000);
        dom = await makeGuestDomain({ prefix: "labtmp-guest-" });
    });
    after(async () => {
        await dom?.dispose().catch(() => undefined);
    });

    it("quiesce: true freezes the ext4 for the snapshot and thaws it: the snapshot's image is clean, the writer goes on", async () => {
        const c0 = await writerPast(dom, dom.disk, 2);
        assert.equal(await freezeStatus(dom), "thawed");
        const s = await suite.up("quiesced", DomainSnapshotProvider, {
            domain: dom.name,
            snapshotName: "quiesced",
            kind: "external",
            memory: "none",
            quiesce: true,
        });
        assert.equal(await freezeStatus(dom), "thawed", "thawed after the snapshot");
        const overlay = (s.outs.diskFiles as Record<string, string>).vda!;
        assert.notEqual(overlay, dom.disk);
        // The base image now holds the filesystem as it was frozen: nothing to replay.
        const base = guestDisk(dom.disk);
        assert.equal(base.clean, true, "the snapshot's ext4 is clean: it was frozen when the snapshot was taken");
        assert.ok(base.counter >= c0);
        await writerPast(dom, overlay, base.counter + 1);
        await suite.engine.destroy(s);
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.equal(await freezeStatus(dom), "thawed");
        await writerPast(dom, dom.disk, base.counter + 1);
    });

    it("without quiesce, the same snapshot of a writing guest catches its ext4 mid-journal (the control)", async () => {
        await writerPast(dom, dom.disk, guestDisk(dom.disk).counter + 1);
        const s = await suite.up("plain", DomainSnapshotProvider, {
            domain: dom.name,
            snapshotName: "plain",
            kind: "external",
            memory: "none",
        });
        assert.equal(guestDisk(dom.disk).clean, false, "a mounted, unfrozen ext4 needs its journal replayed");
        await suite.engine.destroy(s);
        assert.deepEqual(await snapshotNames(dom.name), []);
    });

    it("a snapshot that fails after the freeze leaves the guest thawed, and nothing half-made", async () => {
        const c0 = await writerPast(dom, dom.disk, guestDisk(dom.disk).counter);
        // libvirt freezes first, then creates the overlay (qemuSnapshotCreateActiveExternal, read in
        // libvirt's source): in a folder that doesn't exist, that fails, and libvirt must thaw.
        const missing = path.join(dom.dir, "no-such-folder", "overlay.qcow2");
        await expectCallError(
            suite.up("fails", DomainSnapshotProvider, {
                domain: dom.name,
                snapshotName: "fails",
                kind: "external",
                memory: "none",
                quiesce: true,
                disks: [{ name: "vda", snapshot: "external", file: missing }],
            }),
            /failed to create image file '.*no-such-folder\/overlay\.qcow2'.*\n.*no snapshot 'fails' was left behind[\s\S]*--quiesce/,
        );
        assert.equal(await freezeStatus(dom), "thawed", "thawed after the failure");
        assert.deepEqual(await snapshotNames(dom.name), []);
        const blk = await virshOk(["domblklist", "--domain", dom.name]);
        assert.ok(blk.includes(dom.disk), `still on its own disk: ${blk}`);
        await writerPast(dom, dom.disk, c0 + 1);
    });

    it("RestorePoint with quiesce: the guest is frozen, then paused, snapshotted, resumed and thawed: its snapshot's ext4 is clean", async () => {
        const off = await suite.newDomain();
        const c0 = await writerPast(dom, dom.disk, guestDisk(dom.disk).counter);
        const rp = await suite.up("rp-quiesced", RestorePointProvider, {
            domains: [dom.name, off.name],
            snapshotName: "rp-quiesced",
            kind: "external",
            memory: "none",
            quiesce: true,
        });
        assert.equal(await freezeStatus(dom), "thawed", "thawed after the restore point");
        assert.ok((rp.outs.pausedMilliseconds as number) > 0, "the running member was paused (simultaneous)");
        const snaps = rp.outs.snapshots as Array<{ domainName: string; kind: string; memory: string }>;
        assert.deepEqual(
            snaps.map((m) => [m.domainName, m.kind, m.memory]),
            [
                [dom.name, "external", "none"],
                [off.name, "external", "none"],
            ],
        );
        const base = guestDisk(dom.disk);
        assert.equal(base.clean, true, "the snapshot's ext4 is clean: the guest was frozen while it was taken");
        assert.ok(base.counter >= c0);
        await suite.engine.destroy(rp);
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(await snapshotNames(off.name), []);
        assert.equal(await freezeStatus(dom), "thawed");
        await writerPast(dom, dom.disk, base.counter + 1);
    });

    it("RestorePoint without quiesce, the control: the pause alone leaves the guest's ext4 mid-journal in the snapshot", async () => {
        await writerPast(dom, dom.disk, guestDisk(dom.disk).counter + 1);
        const rp = await suite.up("rp-plain", RestorePointProvider, {
            domains: [dom.name],
            snapshotName: "rp-plain",
            kind: "external",
            memory: "none",
        });
        assert.ok((rp.outs.pausedMilliseconds as number) > 0, "paused for the snapshot");
        assert.equal(guestDisk(dom.disk).clean, false, "a mounted, unfrozen ext4 needs its journal replayed");
        await suite.engine.destroy(rp);
        assert.deepEqual(await snapshotNames(dom.name), []);
    });

    it("RestorePoint with quiesce, a member's snapshot fails after the freeze: the guest is thawed, nothing is left", async () => {
        const off = await suite.newDomain();
        // libvirt names the overlay after the snapshot (disk.qcow2 -> disk.rp-fails) and refuses to overwrite a file.
        const inTheWay = path.join(path.dirname(off.disk), `${path.basename(off.disk, path.extname(off.disk))}.rp-fails`);
        fs.writeFileSync(inTheWay, "in the way");
        const c0 = await writerPast(dom, dom.disk, guestDisk(dom.disk).counter);
        await expectCallError(
            suite.up("rp-fails", RestorePointProvider, {
                domains: [dom.name, off.name],
                snapshotName: "rp-fails",
                kind: "external",
                memory: "none",
                quiesce: true,
            }),
            new RegExp(`restore point 'rp-fails' failed on domain '${off.name}' \\(domains\\[1\\]\\)[\\s\\S]*rolled back: `),
        );
        assert.equal(await freezeStatus(dom), "thawed", "thawed after the failure");
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(await snapshotNames(off.name), []);
        const blk = await virshOk(["domblklist", "--domain", dom.name]);
        assert.ok(blk.includes(dom.disk), `the guest is back on its own disk: ${blk}`);
        assert.equal(fs.readFileSync(inTheWay, "utf8"), "in the way", "the file in the way is untouched");
        await writerPast(dom, dom.disk, c0 + 1);
    });

    it("RestorePoint with quiesce is refused at preview for a running member without an agent, and for a snapshot with memory", async () => {
        const plain = await suite.newDomain({ running: true });
        const noAgent = await suite.failuresOf(RestorePointProvider, {
            domains: [dom.name, plain.name],
            snapshotName: "rp-noagent",
            kind: "external",
            memory: "none",
            quiesce: true,
        });
        assert.match(
            noAgent,
            new RegExp(`^domains\\[1\\]: domain '${plain.name}': quiesce: domain '${plain.name}' has no QEMU guest agent channel`),
        );
        assert.doesNotMatch(noAgent, /domains\[0\]/, "the guest with its agent is fine");
        const withMemory = await suite.failuresOf(RestorePointProvider, {
            domains: [dom.name],
            snapshotName: "rp-memory",
            memory: "internal",
            quiesce: true,
        });
        assert.match(withMemory, /^domains\[0\]: .*quiesce: libvirt quiesces only disk-only snapshots: set memory: 'none'/);
        assert.deepEqual(await snapshotNames(dom.name), [], "preview changed nothing");
        assert.equal(await freezeStatus(dom), "thawed");
    });
    it("RestorePoint with quiesce, the connection is lost right after the freeze: the guard on the host thaws the guest", async () => {
        // The provider reaches the host through a proxy of ours; the moment the member's pause starts (the freeze is done),
        // that pause is stopped, the proxy drops every connection and refuses new ones: the provider can't thaw.
        const lab = loadLab();
        const proxy = await tcpProxy(lab.host, lab.port);
        try {
            const stopped = stopWhenStartedInWorker(`suspend --domain ${dom.name}`, 120_000);
            const upping = suite.up("rp-cut", RestorePointProvider, {
                connection: { ...sshConnection(lab), host: "127.0.0.1", port: proxy.port },
                domains: [dom.name],
                snapshotName: "rp-cut",
                kind: "external",
                memory: "none",
                quiesce: true,
            });
            upping.catch(() => undefined); // awaited below
            const pid = await stopped;
            assert.ok(pid, "the provider paused the frozen guest over the proxy");
            const frozenAt = Date.now();
            assert.equal(await freezeStatus(dom), "frozen", "the provider froze the guest before the pause");
            proxy.cut();
            process.kill(pid, "SIGKILL"); // the pause never happens
            const message = await expectCallError(upping, /restore point 'rp-cut' failed on domain/);
            assert.match(message, /could not be thawed .*the guard on the host thaws them within 60 s of the freeze/);
            assert.equal(await freezeStatus(dom), "frozen", "nobody thawed it yet: the provider lost its connection");
            let status = "frozen";
            for (const until = Date.now() + 120_000; status === "frozen" && Date.now() < until; await sleep(1000))
                status = await freezeStatus(dom);
            assert.equal(status, "thawed", "the guard on the host thawed the guest");
            assert.ok(Date.now() - frozenAt > 30_000, "thawed by the guard's deadline, not by the provider");
            assert.equal(await domstate(dom.name), "running");
            assert.deepEqual(await snapshotNames(dom.name), [], "no snapshot was taken");
            await writerPast(dom, dom.disk, guestDisk(dom.disk).counter + 1);
        } finally {
            proxy.close();
        }
    });
});
