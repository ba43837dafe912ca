// DomainBackup's validation, planning, XML and job parsing, without a host. The
// engine-path tests (test/domainBackup.test.ts) prove the same against the lab.
import * as assert from "node:assert/strict";
import { parseInputs } from "../../provider/inputs";
import { DomainBackupSchema, backupFileName, parseJobInfo, planBackup } from "../../provider/resources/domainBackup";
import { buildBackupXml, parseBackupXml, parseCheckpointXml } from "../../provider/host/xml";
import { fakeProbe } from "./fakeProbe";

const noFacts = { checkpoints: [], ownJob: false as const, existing: [], baseProblems: [] };

function parsed(over: Record<string, unknown>) {
    const r = parseInputs(
        DomainBackupSchema,
        { domain: "web1", targetDir: "/srv/b", checkpointName: "b1", ...over },
        { allowUnknowns: true },
    );
    if (!r.ok) throw new Error(r.failures.map((f) => `${f.property}: ${f.reason}`).join("; "));
    return r.value;
}

describe("DomainBackup inputs and plan", () => {
    it("defaults: a full backup, files kept on destroy, an hour for the job", () => {
        const v = parsed({});
        assert.equal(v.deletion, "checkpoint");
        assert.equal(v.timeoutSeconds, 3600);
        assert.equal(v.quiesce, false);
        assert.equal(v.incrementalFrom, undefined);
    });

    it("plans a push backup with its checkpoint: one qcow2 file per writable disk, named so an incremental finds its base", () => {
        const { plan, failures } = planBackup(parsed({ incrementalFrom: "b0" }), fakeProbe(), {
            ...noFacts,
            checkpoints: ["b0"],
            baseDisks: ["vda"],
        });
        assert.deepEqual(failures, []);
        assert.equal(plan!.kind, "incremental");
        assert.deepEqual(plan!.files, [{ disk: "vda", file: "/srv/b/web1.b1.vda.qcow2", basedOn: "/srv/b/web1.b0.vda.qcow2" }]);
        const b = parseBackupXml(plan!.backupXml);
        assert.equal(b.mode, "push");
        assert.equal(b.incremental, "b0");
        assert.deepEqual(b.disks, [{ name: "vda", file: "/srv/b/web1.b1.vda.qcow2" }]);
        assert.match(plan!.backupXml, /<driver type="qcow2"\/>/);
        const c = parseCheckpointXml(plan!.checkpointXml);
        assert.equal(c.name, "b1");
        // The read-only cdrom is left to libvirt, as for checkpoints.
        assert.deepEqual(
            c.disks.map((d) => [d.name, d.checkpoint]),
            [["vda", "bitmap"]],
        );
    });

    it("refuses with the property and what to do: shut off, a name in use, a file in the way, a broken chain, a raw disk", () => {
        const reasons = (v: Record<string, unknown>, probe = fakeProbe(), facts = {}) =>
            planBackup(parsed(v), probe, { ...noFacts, ...facts })
                .failures.map((f) => `${f.property}: ${f.reason}`)
                .join("\n");
        assert.match(reasons({}, fakeProbe({ state: "shut off" })), /^domain: domain 'web1' is shut off/);
        assert.match(reasons({}, fakeProbe(), { checkpoints: ["b1"] }), /checkpointName: domain 'web1' already has a checkpoint 'b1'/);
        assert.match(reasons({}, fakeProbe(), { existing: ["/srv/b/web1.b1.vda.qcow2"] }), /targetDir: backup file .* already exists/);
        assert.match(
            reasons({ incrementalFrom: "b0" }, fakeProbe(), {
                checkpoints: ["b0"],
                baseDisks: ["vda"],
                baseProblems: ["its backup file X is missing"],
            }),
            /incrementalFrom: the chain from checkpoint 'b0' is broken: its backup file X is missing\..*Take a full backup instead/,
        );
        assert.match(reasons({}, fakeProbe({ format: "raw" })), /disks: disk vda .* is raw.*backup: 'no'/);
        // This backup's own job, left running by an interrupted run: no refusal of its own checkpoint and files.
        assert.equal(reasons({}, fakeProbe(), { ownJob: "running", checkpoints: ["b1"], existing: ["/srv/b/web1.b1.vda.qcow2"] }), "");
    });

    it("backup file names keep odd domain names out of the path", () => {
        assert.equal(backupFileName("/b", "my vm/1", "c1", "vda"), "/b/my_vm_1.c1.vda.qcow2");
    });

    it("a disk left out is backup='no' in the XML and has no file", () => {
        const xml = buildBackupXml({ disks: [{ name: "vda", file: "/b/x.qcow2" }, { name: "vdb" }] });
        assert.match(xml, /<disk name="vdb" backup="no"/);
        assert.deepEqual(parseBackupXml(xml).disks, [{ name: "vda", file: "/b/x.qcow2" }]);
    });

    it("reads domjobinfo --rawstats as libvirt 9.0 prints it", () => {
        assert.deepEqual(
            parseJobInfo(
                "Job type: 5\n\noperation: 9\ntime_elapsed: 4427\ndisk_total: 2147483648\ndisk_processed: 540016640\ndisk_remaining: 1607467008\nsuccess: 0\nerrmsg: Operation canceled\n",
            ),
            { type: "cancelled", operation: "backup", processed: 540016640, total: 2147483648, error: "Operation canceled" },
        );
        assert.equal(parseJobInfo("Job type: 0\n\n").type, "none");
    });
});
