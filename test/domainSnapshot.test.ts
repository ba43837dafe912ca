// DomainSnapshot through the engine path: the SDK serializes the real provider
// object, @pulumi/pulumi's dynamic-provider server runs it, and virsh acts on
// real lab domains. Disk contents are checked with qemu-io patterns.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainSnapshotProvider } from "pulumi-libvirt-snapshots";
import { PACKAGE_ROOT, type ResourceState } from "./harness/engine";
import { observe } from "./support/compat";
import { engineSuite } from "./support/fixture";
import {
    MiB,
    defaultTarget,
    expectCallError,
    hostHasExternalSnapshot,
    qcow2Snapshots,
    re,
    sameHostConnection,
    shutOff,
    snapshotNames,
    sshConnection,
} from "./support/helpers";
import { loadLab, run, qemuImgCheck, qemuImgInfo, qemuIoRead, qemuIoWrite, virshLocal, virshOk, type TestDomain } from "./support/lab";

const lab = loadLab();
const A = 0xaa,
    B = 0xbb,
    C = 0xcc;

describe("DomainSnapshot (engine path, real lab)", function () {
    this.timeout(120_000);
    const suite = engineSuite("labtmp-snap-");
    const { newDomain } = suite;

    const up = (name: string, inputs: Record<string, unknown>) => suite.up(name, DomainSnapshotProvider, inputs);

    describe("internal snapshots", () => {
        it("shut-off domain: write A, snapshot, write B, revert, read A; outputs describe it", async () => {
            const dom = await newDomain();
            await qemuIoWrite(dom.disk, A, 0, MiB);
            const s = await up("off-a", {
                domain: dom.name,
                snapshotName: "before upgrade",
                description: "before the PostgreSQL 17 upgrade",
            });
            assert.equal(s.id, `${dom.uuid}/before upgrade`);
            assert.equal(s.outs.snapshotName, "before upgrade");
            assert.equal(s.outs.domainName, dom.name);
            assert.equal(s.outs.domainUuid, dom.uuid);
            assert.equal(s.outs.kind, "internal");
            assert.equal(s.outs.memory, "none");
            assert.equal(s.outs.state, "shutoff");
            assert.equal(s.outs.isCurrent, true);
            assert.equal(s.outs.parent, null);
            assert.equal(s.outs.description, "before the PostgreSQL 17 upgrade");
            assert.equal(s.outs.libvirtVersion, lab.libvirtVersion);
            assert.ok(Math.abs(Date.parse(s.outs.creationTime as string) - Date.now()) < 120_000);
            assert.deepEqual(await qcow2Snapshots(dom.disk), ["before upgrade"]);

            await qemuIoWrite(dom.disk, B, 0, MiB);
            await virshOk(["snapshot-revert", "--domain", dom.name, "--snapshotname", "before upgrade"]);
            assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true);

            await suite.engine.destroy(s);
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.deepEqual(await qcow2Snapshots(dom.disk), []);
        });

        it("running domain over SSH: memory saved inside qcow2; revert brings back A and the running state", async () => {
            const dom = await newDomain();
            await qemuIoWrite(dom.disk, A, 0, MiB);
            await virshOk(["start", dom.name]);
            const s = await up("run-a", { connection: sshConnection(), domain: dom.name, snapshotName: "run-a" });
            assert.equal(s.outs.memory, "internal");
            assert.equal(s.outs.state, "running");
            // The key leaves the provider only wrapped as a Pulumi secret, which the engine stores encrypted.
            const conn = s.outs.connection as Record<string, unknown>;
            assert.deepEqual(Object.keys(conn.privateKey as object).sort(), ["4dabf18193072939515e22adb298388d", "value"]);
            assert.equal(conn.host, lab.host, "the rest of the connection stays readable");
            await shutOff(dom);
            await qemuIoWrite(dom.disk, B, 0, MiB);
            await virshOk(["snapshot-revert", "--domain", dom.name, "--snapshotname", "run-a"]);
            assert.equal((await virshOk(["domstate", "--domain", dom.name])).trim(), "running");
            assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true);
            await suite.engine.destroy(s);
            assert.deepEqual(await snapshotNames(dom.name), []);
        });

        it("deleting the middle of a chain of three keeps the last one's data; qemu-img check is clean", async () => {
            const dom = await newDomain();
            const states: ResourceState[] = [];
            for (const [i, p] of [A, B, C].entries()) {
                await qemuIoWrite(dom.disk, p, i * MiB, MiB);
                states.push(await up(`chain-${i}`, { domain: dom.name, snapshotName: `chain-${i}` }));
            }
            assert.equal(states[1]!.outs.parent, "chain-0");
            assert.equal(states[2]!.outs.parent, "chain-1");
            await suite.engine.destroy(states[1]!);
            assert.deepEqual(await snapshotNames(dom.name), ["chain-0", "chain-2"]);
            const refreshed = await suite.engine.refresh(states[2]!);
            assert.equal(refreshed!.outs.parent, "chain-0", "the child is re-parented");
            await qemuIoWrite(dom.disk, 0x11, 0, 3 * MiB);
            await virshOk(["snapshot-revert", "--domain", dom.name, "--snapshotname", "chain-2"]);
            for (const [i, p] of [A, B, C].entries()) assert.equal(await qemuIoRead(dom.disk, p, i * MiB, MiB), true, `region ${i}`);
            const check = await qemuImgCheck(dom.disk);
            assert.equal(check.ok, true, check.stderr);
            await suite.engine.destroy(states[2]!);
            await suite.engine.destroy(states[0]!);
            assert.deepEqual(await qcow2Snapshots(dom.disk), []);
        });

        it("refuses an internal snapshot of a raw disk at preview, naming the property", async () => {
            const dom = await newDomain({ format: "raw" });
            const news = await suite.engine.programInputs(DomainSnapshotProvider, { domain: dom.name, snapshotName: "x" });
            const r = await suite.engine.check(suite.engine.urn("pulumi-nodejs:dynamic:Resource", "raw"), {}, news);
            assert.equal(r.failures.length, 1);
            assert.equal(r.failures[0]!.property, "kind");
            assert.match(
                r.failures[0]!.reason,
                /an internal snapshot lives inside a qcow2 image, but disk vda .* is raw\. Use kind: 'external'/,
            );
            assert.deepEqual(await snapshotNames(dom.name), []);
        });
        it("a shut-off domain that has checkpoints: preview refuses exactly what this libvirt refuses, and allows what it takes", async () => {
            const dom = await newDomain();
            await virshOk(["start", dom.name]);
            await virshOk(["checkpoint-create-as", "--domain", dom.name, "--name", "ck1"]);
            await virshOk(["destroy", dom.name]);
            const seen: string[] = [];
            for (const kind of ["internal", "external"]) {
                const news = await suite.engine.programInputs(DomainSnapshotProvider, {
                    domain: dom.name,
                    snapshotName: `x-${kind}`,
                    kind,
                });
                const r = await suite.engine.check(suite.engine.urn("pulumi-nodejs:dynamic:Resource", `ck-${kind}`), {}, news);
                // What libvirt does when asked directly: the preview must say the same.
                const direct = await virshLocal([
                    "snapshot-create-as",
                    "--domain",
                    dom.name,
                    "--name",
                    "direct",
                    ...(kind === "external"
                        ? ["--disk-only", "--diskspec", `vda,snapshot=external,file=${path.join(dom.dir, "direct.qcow2")}`]
                        : []),
                ]);
                observe(
                    kind === "internal" ? "internal-offline-with-checkpoints" : "external-offline-with-checkpoints",
                    direct.code === 0 ? "works" : "refused",
                );
                if (direct.code === 0) {
                    assert.deepEqual(r.failures, [], `libvirt ${lab.libvirtVersion} takes a ${kind} snapshot here, so preview allows it`);
                    await virshOk(["snapshot-delete", "--domain", dom.name, "--snapshotname", "direct"]);
                    seen.push(`${kind}: taken`);
                    continue;
                }
                seen.push(`${kind}: refused`);
                assert.deepEqual(
                    r.failures.map((f) => f.property),
                    ["domain"],
                    `libvirt refused: ${direct.stderr.trim()}`,
                );
                assert.match(
                    r.failures[0]!.reason,
                    new RegExp(
                        `is shut off and has checkpoints \\(ck1\\): libvirt ${re(lab.libvirtVersion)} takes no ${kind === "external" ? "external " : ""}snapshot of it then`,
                    ),
                );
                assert.match(
                    direct.stderr,
                    /cannot perform block operations while checkpoint exists|offline external snapshots while checkpoint exists was not yet implemented/,
                );
            }
            // Measured: 9.0 refuses both; 11.3 takes the internal one only.
            assert.deepEqual(
                seen,
                lab.libvirtVersion.startsWith("9.") ? ["internal: refused", "external: refused"] : ["internal: taken", "external: refused"],
            );
            assert.deepEqual(await snapshotNames(dom.name), []);
            await virshOk(["checkpoint-delete", "--domain", dom.name, "--checkpointname", "ck1", "--metadata"]);
        });
    });

    describe("names qemu takes in a job ID", () => {
        it("an internal snapshot of a running domain: preview refuses a name this libvirt can't take, exactly when libvirt refuses it", async () => {
            const dom = await newDomain({ running: true });
            for (const name of ["before upgrade", "before-upgrade.1"]) {
                const failures = await suite.failuresOf(DomainSnapshotProvider, { domain: dom.name, snapshotName: name });
                const direct = await virshLocal(["snapshot-create-as", "--domain", dom.name, "--name", name]);
                if (name === "before upgrade") observe("internal-running-name-with-space", direct.code === 0 ? "works" : "refused");
                if (direct.code === 0) {
                    assert.equal(failures, "", `libvirt ${lab.libvirtVersion} took '${name}', so preview allows it`);
                    await virshOk(["snapshot-delete", "--domain", dom.name, "--snapshotname", name]);
                } else {
                    assert.match(direct.stderr, /Invalid job ID/);
                    assert.match(
                        failures,
                        new RegExp(
                            `^snapshotName: libvirt ${re(lab.libvirtVersion)} takes an internal snapshot of a running domain as a qemu job named after it, and qemu refuses 'before upgrade'`,
                        ),
                    );
                }
            }
            // Measured: 9.0 takes any name; 11.3 (and, by its NEWS, 10.9 on) only letters, digits, '-', '.' and '_'.
            const refused = (await suite.failuresOf(DomainSnapshotProvider, { domain: dom.name, snapshotName: "before upgrade" })) !== "";
            assert.equal(refused, !lab.libvirtVersion.startsWith("9."));
            // Shut off, any name works on both: qemu-img does the work, no job.
            await virshOk(["destroy", "--domain", dom.name]);
            assert.equal(await suite.failuresOf(DomainSnapshotProvider, { domain: dom.name, snapshotName: "before upgrade" }), "");
            assert.deepEqual(await snapshotNames(dom.name), []);
        });

        it("deleting such a snapshot while the domain runs is refused where qemu would refuse it, and nothing is lost", async () => {
            const dom = await newDomain();
            const s = await up("job-id", { domain: dom.name, snapshotName: "taken while off" });
            await virshOk(["start", "--domain", dom.name]);
            if (lab.libvirtVersion.startsWith("9.")) {
                await suite.engine.destroy(s);
            } else {
                await expectCallError(
                    suite.engine.destroy(s),
                    /cannot delete internal snapshot 'taken while off' of domain '.*' while it runs: .*'Invalid job ID'.*Nothing was changed\. Shut the domain off and run destroy again/,
                );
                assert.deepEqual(await snapshotNames(dom.name), ["taken while off"]);
                await virshOk(["destroy", "--domain", dom.name]);
                await suite.engine.destroy(s);
            }
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.deepEqual(await qcow2Snapshots(dom.disk), []);
        });
    });

    describe("external snapshots", () => {
        it("running domain, full system: overlay + memory file; chain right before and after delete; memory file removed", async () => {
            const dom = await newDomain();
            await qemuIoWrite(dom.disk, A, 0, MiB);
            await virshOk(["start", dom.name]);
            const memoryFile = path.join(dom.dir, "ext1.mem");
            const overlay = path.join(dom.dir, "disk.ext1.qcow2");
            const s = await up("ext1", {
                domain: dom.name,
                snapshotName: "ext1",
                kind: "external",
                memory: "external",
                memoryFile,
                disks: [{ name: "vda", snapshot: "external", file: overlay }],
            });
            assert.equal(s.outs.kind, "external");
            assert.equal(s.outs.memory, "external");
            assert.equal(s.outs.memoryFile, memoryFile);
            assert.deepEqual(s.outs.diskFiles, { vda: overlay });
            assert.ok(fs.existsSync(memoryFile));
            const chain = await qemuImgInfo(overlay, { backingChain: true });
            assert.deepEqual(
                chain.map((c) => c.filename),
                [overlay, dom.disk],
            );
            // The base keeps A, read-only now; new writes go to the overlay.
            assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true);
            await suite.engine.destroy(s);
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.equal(fs.existsSync(overlay), false, "libvirt committed and removed the overlay");
            assert.equal(fs.existsSync(memoryFile), false, "the memory file we created is gone");
            const after = await virshOk(["domblklist", "--domain", dom.name]);
            assert.match(after, new RegExp(`vda\\s+${dom.disk.replace(/[.]/g, "\\.")}`));
            assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true);
        });

        it("running domain, disk-only with the default overlay name and no memory", async () => {
            const dom = await newDomain();
            await virshOk(["start", dom.name]);
            const s = await up("ext-disk", { domain: dom.name, snapshotName: "ext-disk", kind: "external", memory: "none" });
            assert.equal(s.outs.state, "disk-snapshot");
            assert.equal(s.outs.memory, "none");
            const overlay = (s.outs.diskFiles as Record<string, string>).vda!;
            assert.equal(overlay, path.join(dom.dir, "disk.ext-disk"));
            await suite.engine.destroy(s);
            assert.equal(fs.existsSync(overlay), false);
        });

        it("shut-off domain: leaf delete works; a non-leaf delete merges where libvirt can (<externalSnapshot/>), else is refused clearly; nothing is lost", async () => {
            const dom = await newDomain();
            await qemuIoWrite(dom.disk, A, 0, MiB);
            const s1 = await up("off-ext1", { domain: dom.name, snapshotName: "off-ext1", kind: "external" });
            const o1 = (s1.outs.diskFiles as Record<string, string>).vda!;
            await qemuIoWrite(o1, B, MiB, MiB);
            const s2 = await up("off-ext2", { domain: dom.name, snapshotName: "off-ext2", kind: "external" });
            const o2 = (s2.outs.diskFiles as Record<string, string>).vda!;
            assert.deepEqual(
                (await qemuImgInfo(o2, { backingChain: true })).map((c) => c.filename),
                [o2, o1, dom.disk],
            );
            if (await hostHasExternalSnapshot()) {
                // libvirt 11.3 merges the middle of a shut-off domain's chain: off-ext2's overlay then sits on the base.
                await suite.engine.destroy(s1);
                assert.deepEqual(await snapshotNames(dom.name), ["off-ext2"]);
                const chain = (await qemuImgInfo(o2, { backingChain: true })).map((c) => c.filename);
                assert.equal(chain[0], o2);
                assert.equal(chain.includes(o1), false, `off-ext1's overlay is merged out of the chain: ${chain.join(" <- ")}`);
                assert.equal(await qemuIoRead(o2, A, 0, MiB), true, "the data before off-ext1 is intact");
                assert.equal(await qemuIoRead(o2, B, MiB, MiB), true, "the data written into off-ext1's overlay is kept");
                observe("external-nonleaf-delete-offline", "works");
                await suite.engine.destroy(s2);
            } else {
                const msg = await expectCallError(
                    suite.engine.destroy(s1),
                    /cannot delete external snapshot 'off-ext1' .*the domain is shut off and the snapshot has 1 child snapshot\(s\).*Nothing was changed/,
                );
                assert.ok(!/stack|at /.test(msg.split("\n")[0]!));
                // libvirt asked directly refuses it too, and changes nothing.
                const direct = await virshLocal(["snapshot-delete", "--domain", dom.name, "--snapshotname", "off-ext1"]);
                assert.notEqual(
                    direct.code,
                    0,
                    "libvirt without <externalSnapshot/> merges no non-leaf external snapshot of a shut-off domain",
                );
                observe("external-nonleaf-delete-offline", "refused");
                assert.deepEqual(await snapshotNames(dom.name), ["off-ext1", "off-ext2"]);
                assert.equal(await qemuIoRead(o2, A, 0, MiB), true);
                assert.equal(await qemuIoRead(o2, B, MiB, MiB), true);
                await suite.engine.destroy(s2);
                await suite.engine.destroy(s1);
            }
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.equal(await qemuIoRead(dom.disk, A, 0, MiB), true);
            const active = (await virshOk(["domblklist", "--domain", dom.name])).trim();
            assert.ok(active.includes(dom.disk), `the domain is back on its base image: ${active}`);
            assert.equal(await qemuIoRead(dom.disk, B, MiB, MiB), true, "and the base holds what was written after the first snapshot");
        });
    });

    describe("preview, diff, update, refresh, adopt", () => {
        let dom: TestDomain;
        before(async () => {
            dom = await newDomain();
        });

        it("updates the description in place (redefine), without replacing", async () => {
            const s = await up("desc", { domain: dom.name, snapshotName: "desc", description: "first" });
            const created = s.outs.creationTime;
            const hostile = "quotes \" ' `x` $(touch /tmp/desc-canary) ; | & > < ]]> \n second line ✓ \u202e";
            const ch = await suite.engine.change(s, DomainSnapshotProvider, {
                domain: dom.name,
                snapshotName: "desc",
                description: hostile,
            });
            assert.equal(ch.op, "update");
            assert.deepEqual(ch.diff.replaces, []);
            assert.equal(ch.state.outs.description, hostile);
            assert.equal(ch.state.outs.creationTime, created);
            const xml = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "desc"]);
            assert.match(xml, /second line/);
            assert.equal(fs.existsSync("/tmp/desc-canary"), false);
            await suite.engine.destroy(ch.state);
        });

        it("replaces on a change of name, kind or memory; deleteBeforeReplace only when the name stays", async () => {
            const s = await up("rep", { domain: dom.name, snapshotName: "rep" });
            const news = await suite.engine.programInputs(DomainSnapshotProvider, { domain: dom.name, snapshotName: "rep2" });
            let d = await suite.engine.diff(s.urn, s.id, s.outs, news);
            assert.deepEqual(d.replaces, ["snapshotName"]);
            assert.equal(d.deleteBeforeReplace, false);
            d = await suite.engine.diff(
                s.urn,
                s.id,
                s.outs,
                await suite.engine.programInputs(DomainSnapshotProvider, { domain: dom.name, snapshotName: "rep", atomic: false }),
            );
            assert.deepEqual(d.replaces, ["atomic"]);
            assert.equal(d.deleteBeforeReplace, true);
            d = await suite.engine.diff(
                s.urn,
                s.id,
                s.outs,
                await suite.engine.programInputs(DomainSnapshotProvider, { domain: dom.uuid, snapshotName: "rep" }),
            );
            assert.equal(d.changes, "none", "the same domain by UUID is no change");
            d = await suite.engine.diff(
                s.urn,
                s.id,
                s.outs,
                await suite.engine.programInputs(DomainSnapshotProvider, { domain: dom.name, snapshotName: "rep", deletion: "metadata" }),
            );
            assert.equal(d.changes, "some");
            assert.deepEqual(d.replaces, []);
            // New credentials for the same host change nothing on the host: an in-place update only records them.
            d = await suite.engine.diff(
                s.urn,
                s.id,
                s.outs,
                await suite.engine.programInputs(DomainSnapshotProvider, {
                    domain: dom.name,
                    snapshotName: "rep",
                    connection: sameHostConnection(),
                }),
            );
            assert.deepEqual(d.replaces, []);
            await suite.engine.destroy(s);
        });

        it("drift: a snapshot deleted behind Pulumi's back is planned for re-creation, and refresh drops it", async () => {
            const s = await up("drift", { domain: dom.name, snapshotName: "drift" });
            await virshOk(["snapshot-delete", "--domain", dom.name, "--snapshotname", "drift"]);
            const d = await suite.engine.diff(s.urn, s.id, s.outs, s.inputs);
            assert.equal(d.changes, "some");
            assert.deepEqual(d.replaces, ["snapshotName"]);
            assert.equal(d.deleteBeforeReplace, true);
            assert.equal(await suite.engine.refresh(s), undefined);
            // Delete of an already-gone snapshot succeeds; a replace recreates it.
            const ch = await suite.engine.change(s, DomainSnapshotProvider, { domain: dom.name, snapshotName: "drift" });
            assert.equal(ch.op, "replace");
            assert.deepEqual(await snapshotNames(dom.name), ["drift"]);
            await suite.engine.destroy(ch.state);
        });

        it("adopts a matching existing snapshot, refuses a different one saying what differs, and fails without adopt", async () => {
            await virshOk(["snapshot-create-as", "--domain", dom.name, "--name", "existing"]);
            await expectCallError(
                up("no-adopt", { domain: dom.name, snapshotName: "existing" }),
                /snapshot 'existing' already exists on domain '.*'.*Set adopt: true to take it over, or choose another snapshotName/,
            );
            await expectCallError(
                up("bad-adopt", { domain: dom.name, snapshotName: "existing", kind: "external", adopt: true }),
                /cannot adopt snapshot 'existing' .*it differs from what is declared: kind is 'internal', declared 'external'/,
            );
            const s = await up("adopt", { domain: dom.name, snapshotName: "existing", adopt: true, description: "adopted" });
            assert.equal(s.outs.adopted, true);
            assert.equal(s.outs.description, "adopted");
            await suite.engine.destroy(s);
            assert.deepEqual(await snapshotNames(dom.name), []);
        });

        it("keeps the data with deletion: 'metadata'", async () => {
            const s = await up("meta", { domain: dom.name, snapshotName: "meta", deletion: "metadata" });
            await suite.engine.destroy(s);
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.deepEqual(await qcow2Snapshots(dom.disk), ["meta"], "the qcow2 snapshot stays");
            await run("/usr/bin/qemu-img", ["snapshot", "-d", "meta", dom.disk]);
        });

        it("check reports every impossible combination with the property and the reason, and never touches the VM", async () => {
            const failures = (inputs: Record<string, unknown>) => suite.failuresOf(DomainSnapshotProvider, inputs);
            assert.match(
                await failures({ domain: dom.name, snapshotName: "m", memory: "internal" }),
                /^memory: domain '.*' is shut off, so there is no memory state to save/,
            );
            assert.match(
                await failures({ domain: dom.name, snapshotName: "q", kind: "external", quiesce: true }),
                /quiesce: domain '.*' is shut off/,
            );
            assert.match(
                await failures({ domain: "no-such-domain", snapshotName: "x" }),
                new RegExp(`^domain: no domain 'no-such-domain' on ${re(defaultTarget())}`),
            );
            assert.match(await failures({ domain: dom.name, snapshotName: 'a"b' }), /^snapshotName: must not contain '"'/);
            assert.match(
                await failures({ domain: dom.name, snapshotName: "x", connection: { host: lab.host, port: 1, dialErrorLimit: 1 } }),
                new RegExp(`^connection: cannot check the snapshot against root@${re(lab.host)}:1`),
            );
            assert.deepEqual(await snapshotNames(dom.name), []);
            const run = await newDomain({ running: true });
            assert.match(
                await failures({ domain: run.name, snapshotName: "q", kind: "external", memory: "none", quiesce: true }),
                /has no QEMU guest agent channel/,
            );
            assert.match(
                await failures({ domain: run.name, snapshotName: "m", memory: "none" }),
                /disk-only internal snapshot of a running domain/,
            );
            assert.equal((await virshOk(["domstate", "--domain", run.name])).trim(), "running");
            assert.deepEqual(await snapshotNames(run.name), []);
        });

        it("hostile names are used literally (and refused where libvirt would break)", async () => {
            const names = [
                "with space",
                "it's",
                "$(touch name-canary)",
                "a;b|c&d",
                "<x>&amp;",
                "ünï ✓ \u202e",
                "`id`",
                "--",
                "x -- --metadata",
            ];
            for (const n of names.filter((x) => !x.startsWith("-"))) {
                const s = await up(`h-${names.indexOf(n)}`, { domain: dom.name, snapshotName: n, description: n });
                assert.equal(s.outs.snapshotName, n);
                assert.deepEqual(await snapshotNames(dom.name), [n]);
                await suite.engine.destroy(s);
            }
            assert.equal(fs.existsSync("name-canary") || fs.existsSync(path.join(PACKAGE_ROOT, "name-canary")), false);
            await expectCallError(up("dash", { domain: dom.name, snapshotName: "--" }), /snapshotName: must not start with '-'/);
        });
    });

    it("creates ten snapshots of one domain concurrently, then deletes them concurrently", async () => {
        const dom = await newDomain({ running: true });
        const states = await Promise.all(
            Array.from({ length: 10 }, (_, i) => up(`par-${i}`, { domain: dom.name, snapshotName: `par-${i}` })),
        );
        assert.equal((await snapshotNames(dom.name)).length, 10);
        await Promise.all(states.map((s) => suite.engine.destroy(s)));
        assert.deepEqual(await snapshotNames(dom.name), []);
        assert.deepEqual(await qcow2Snapshots(dom.disk), []);
        assert.equal((await virshOk(["domstate", "--domain", dom.name])).trim(), "running");
    });

    // The domain's own policy (<disk snapshot='no'>) against what libvirt does when asked directly, on each host.
    describe("the domain's own snapshot policy: a second disk marked snapshot='no'", () => {
        const scratchDisk = (dom: TestDomain) => path.join(dom.dir, "disk-vdb.qcow2");
        const ALL_DISKS = /internal and full system snapshots require all disks to be selected for snapshot/;

        for (const running of [false, true]) {
            it(`${running ? "running" : "shut off"}: preview refuses the internal snapshot where libvirt refuses it; nothing changed`, async () => {
                const dom = await newDomain({ running, extraDisks: [{ target: "vdb", snapshot: "no" }] });
                const said = await suite.failuresOf(DomainSnapshotProvider, { domain: dom.name, snapshotName: "pol-int" });
                assert.match(said, /^kind: disk vdb \(.*disk-vdb\.qcow2\) says snapshot='no' in the domain XML/);
                assert.match(said, /Include it with disks: \[\{ name: 'vdb', snapshot: 'internal' \}\], or use kind: 'external'$/);
                assert.equal(said.split("\n").length, 1, said);
                // libvirt itself, asked for the same snapshot (all disks by their policy) (measured on 9.0 and 11.3).
                const direct = await virshLocal(["snapshot-create-as", "--domain", dom.name, "--name", "direct"]);
                assert.notEqual(direct.code, 0, "libvirt took it");
                assert.match(direct.stderr, ALL_DISKS);
                assert.deepEqual(await snapshotNames(dom.name), []);
                assert.deepEqual(await qcow2Snapshots(dom.disk), []);
                assert.deepEqual(await qcow2Snapshots(scratchDisk(dom)), []);
                assert.equal((await virshOk(["domstate", "--domain", dom.name])).trim(), running ? "running" : "shut off");
            });
        }

        it("a disks entry that leaves a plain disk out of an internal snapshot is refused as libvirt refuses it", async () => {
            const dom = await newDomain({ extraDisks: [{ target: "vdb" }] });
            const said = await suite.failuresOf(DomainSnapshotProvider, {
                domain: dom.name,
                snapshotName: "pol-entry",
                disks: [{ name: "vdb", snapshot: "no" }],
            });
            assert.match(said, /^disks\[0\]\.snapshot: disks\[0\] leaves disk vdb .* out/);
            const direct = await virshLocal([
                "snapshot-create-as",
                "--domain",
                dom.name,
                "--name",
                "direct",
                "--diskspec",
                "vdb,snapshot=no",
            ]);
            assert.notEqual(direct.code, 0, "libvirt took it");
            assert.match(direct.stderr, /internal and full system snapshots require all disks|must use snapshot mode 'internal'/);
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.deepEqual(await qcow2Snapshots(dom.disk), []);
        });

        it("an external snapshot leaves that disk without an overlay, as libvirt's own --disk-only does", async () => {
            const dom = await newDomain({ extraDisks: [{ target: "vdb", snapshot: "no" }] });
            const s = await up("pol-ext", { domain: dom.name, snapshotName: "pol-ext", kind: "external" });
            assert.equal(s.outs.kind, "external");
            const overlay = path.join(dom.dir, "disk.pol-ext");
            assert.deepEqual(s.outs.diskFiles, { vda: overlay });
            const blk = await virshOk(["domblklist", "--domain", dom.name]);
            assert.match(blk, new RegExp(`vda\\s+${re(overlay)}\\s`));
            assert.match(blk, new RegExp(`vdb\\s+${re(scratchDisk(dom))}\\s`), "vdb keeps its own image");
            assert.equal(fs.existsSync(path.join(dom.dir, "disk-vdb.pol-ext")), false, "no overlay beside vdb");
            assert.deepEqual(await qcow2Snapshots(scratchDisk(dom)), []);
            const record = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "pol-ext"]);
            assert.match(record, /<disk name='vdb' snapshot='no'\/>/);
            await suite.engine.destroy(s);
            assert.deepEqual(await snapshotNames(dom.name), []);
            // libvirt asked directly does the same: an overlay for vda only.
            const direct = await virshLocal(["snapshot-create-as", "--domain", dom.name, "--name", "direct", "--disk-only"]);
            assert.equal(direct.code, 0, direct.stderr);
            const after = await virshOk(["domblklist", "--domain", dom.name]);
            assert.match(after, new RegExp(`vda\\s+${re(path.join(dom.dir, "disk.direct"))}\\s`));
            assert.match(after, new RegExp(`vdb\\s+${re(scratchDisk(dom))}\\s`));
            await virshOk(["snapshot-delete", "--domain", dom.name, "--snapshotname", "direct", "--metadata"]);
        });

        it("a disks entry naming the disk includes it: both images hold the internal snapshot", async () => {
            const dom = await newDomain({ extraDisks: [{ target: "vdb", snapshot: "no" }] });
            await qemuIoWrite(scratchDisk(dom), A, 0, MiB);
            const s = await up("pol-inc", { domain: dom.name, snapshotName: "pol-inc", disks: [{ name: "vdb", snapshot: "internal" }] });
            assert.equal(s.outs.kind, "internal");
            assert.deepEqual(await qcow2Snapshots(dom.disk), ["pol-inc"]);
            assert.deepEqual(await qcow2Snapshots(scratchDisk(dom)), ["pol-inc"]);
            await qemuIoWrite(scratchDisk(dom), B, 0, MiB);
            await virshOk(["snapshot-revert", "--domain", dom.name, "--snapshotname", "pol-inc"]);
            assert.equal(await qemuIoRead(scratchDisk(dom), A, 0, MiB), true, "vdb's data came back with the revert");
            await suite.engine.destroy(s);
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.deepEqual(await qcow2Snapshots(scratchDisk(dom)), []);
        });
    });
});
