// Check's free-space estimate without a host: what a planned snapshot writes and how much room each
// part needs, the new input's validation, and the RAM read from libvirt's XML. test/outOfSpace.test.ts
// proves the refusals and the clean-up against the lab's small filesystem.
import * as assert from "node:assert/strict";
import { parseInputs } from "../../provider/inputs";
import { parseDomainXml } from "../../provider/host/xml";
import { DomainSnapshotSchema } from "../../provider/resources/domainSnapshot";
import { RestorePointSchema } from "../../provider/resources/restorePoint";
import { planSnapshot } from "../../provider/snapshot/plan";
import { DEFAULT_SPACE_MARGIN_MIB, defaultOverlayFile, humanBytes, spaceNeeds } from "../../provider/snapshot/space";
import { fakeProbe } from "./fakeProbe";

const MiB = 1024 * 1024;
const RAM = 512 * MiB;

function probe(state = "running") {
    const p = fakeProbe({ state });
    p.info.memoryBytes = RAM;
    return p;
}

function needsOf(inputs: Record<string, unknown>, state = "running", margin?: number) {
    const p = probe(state);
    const v = DomainSnapshotSchema.parse({ domain: "web1", snapshotName: "s1", ...inputs });
    const { plan, failures } = planSnapshot(v, p);
    assert.ok(plan, failures.map((f) => f.reason).join("; "));
    return spaceNeeds(p, plan, margin).map((n) => ({ file: n.file, dir: n.dir, bytes: n.bytes, property: n.property }));
}

describe("free space: what a snapshot needs", () => {
    it("an internal snapshot of a running domain: the RAM, inside the qcow2 image", () => {
        assert.deepEqual(needsOf({}), [
            { file: "/var/lib/libvirt/images/web1.qcow2", dir: "/var/lib/libvirt/images", bytes: RAM, property: "memory" },
        ]);
    });
    it("an internal snapshot of a shut-off domain needs no room check asks for", () => {
        assert.deepEqual(needsOf({}, "shut off"), []);
    });
    it("an external snapshot with memory: the RAM in the memory file, the margin per overlay", () => {
        assert.deepEqual(needsOf({ kind: "external", memory: "external", memoryFile: "/big/web1.mem" }), [
            { file: "/big/web1.mem", dir: "/big", bytes: RAM, property: "memoryFile" },
            {
                file: "/var/lib/libvirt/images/web1.s1",
                dir: "/var/lib/libvirt/images",
                bytes: DEFAULT_SPACE_MARGIN_MIB * MiB,
                property: "spaceMarginMiB",
            },
        ]);
    });
    it("a disk-only overlay with its own file and margin", () => {
        assert.deepEqual(
            needsOf({ kind: "external", memory: "none", disks: [{ name: "vda", snapshot: "external", file: "/o/v.qcow2" }] }, "running", 5),
            [{ file: "/o/v.qcow2", dir: "/o", bytes: 5 * MiB, property: "spaceMarginMiB" }],
        );
    });
    it("names overlays as libvirt does when no file is given", () => {
        assert.equal(defaultOverlayFile("/a/disk.qcow2", "s1"), "/a/disk.s1");
        assert.equal(defaultOverlayFile("/a/disk", "s1"), "/a/disk.s1");
        assert.equal(defaultOverlayFile("/a.b/disk", "s 1"), "/a.b/disk.s 1");
    });
    it("says sizes in binary units", () => {
        assert.equal(humanBytes(64 * MiB), "64.0 MiB");
        assert.equal(humanBytes(1536 * MiB), "1.5 GiB");
        assert.equal(humanBytes(131072), "128 KiB");
        assert.equal(humanBytes(0), "0 bytes");
    });
});

describe("free space: inputs and the guest's RAM", () => {
    const reasons = (schema: typeof DomainSnapshotSchema | typeof RestorePointSchema, inputs: Record<string, unknown>) => {
        const r = parseInputs(schema, { snapshotName: "s1", ...inputs }, { allowUnknowns: false });
        return r.ok ? "" : r.failures.map((f) => `${f.property}|${f.reason}`).join("\n");
    };
    it("spaceMarginMiB is a whole number of MiB from 0, on both resources", () => {
        const snap = (over: Record<string, unknown>) => reasons(DomainSnapshotSchema, { domain: "web1", ...over });
        const rp = (over: Record<string, unknown>) => reasons(RestorePointSchema, { domains: ["web1"], ...over });
        assert.equal(snap({ spaceMarginMiB: 0 }), "");
        assert.equal(rp({ spaceMarginMiB: 128 }), "");
        assert.match(snap({ spaceMarginMiB: -1 }), /^spaceMarginMiB\|must be at least 0/);
        assert.match(snap({ spaceMarginMiB: 1.5 }), /^spaceMarginMiB\|must be a whole number of MiB/);
        assert.match(rp({ spaceMarginMiB: "64M" }), /^spaceMarginMiB\|must be a number of MiB/);
        assert.match(rp({ spaceMarginMiB: 2 ** 21 }), /^spaceMarginMiB\|must be at most 1048576/);
    });
    it("reads currentMemory in its unit, else memory", () => {
        const xml = (mem: string) => `<domain><name>d</name><uuid>u</uuid>${mem}<devices/></domain>`;
        assert.equal(
            parseDomainXml(xml(`<memory unit='KiB'>131072</memory><currentMemory unit='KiB'>65536</currentMemory>`)).memoryBytes,
            64 * MiB,
        );
        assert.equal(parseDomainXml(xml(`<memory unit='GiB'>2</memory>`)).memoryBytes, 2048 * MiB);
        assert.equal(parseDomainXml(xml(`<memory>1024</memory>`)).memoryBytes, MiB, "KiB when no unit is given");
        assert.equal(parseDomainXml(xml("")).memoryBytes, undefined);
    });
});
