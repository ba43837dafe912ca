// The domain's own snapshot policy (<disk snapshot='no'|'internal'|'external'|'manual'>) and the disks input,
// without a host: what planSnapshot plans for each disk, and what it refuses as libvirt would.
// test/domainSnapshot.test.ts proves the 'no' rules against both lab hosts.
import * as assert from "node:assert/strict";
import { parseInputs } from "../../provider/inputs";
import { DomainSnapshotSchema } from "../../provider/resources/domainSnapshot";
import { planSnapshot } from "../../provider/snapshot/plan";
import type { DomainDisk } from "../../provider/host/xml";
import { fakeProbe } from "./fakeProbe";

const disk = (target: string, snapshot?: string, over: Partial<DomainDisk> = {}): DomainDisk => ({
    target,
    device: "disk",
    type: "file",
    format: "qcow2",
    source: `/var/lib/libvirt/images/web1-${target}.qcow2`,
    readonly: false,
    ...(snapshot !== undefined ? { snapshot } : {}),
    ...over,
});

function plan(inputs: Record<string, unknown>, disks: DomainDisk[], state = "shut off") {
    const r = parseInputs(DomainSnapshotSchema, { domain: "web1", snapshotName: "s1", ...inputs }, { allowUnknowns: false });
    assert.ok(r.ok, JSON.stringify(r));
    return planSnapshot(r.value, fakeProbe({ state, disks }));
}
const failures = (inputs: Record<string, unknown>, disks: DomainDisk[], state?: string) =>
    plan(inputs, disks, state).failures.map((f) => `${f.property}: ${f.reason}`);
const modes = (inputs: Record<string, unknown>, disks: DomainDisk[], state?: string) => {
    const p = plan(inputs, disks, state);
    assert.deepEqual(p.failures, []);
    return p.plan!.spec.disks.map((d) => `${d.name}=${d.snapshot}`);
};

describe("planSnapshot: the domain's own snapshot policy", () => {
    const scratch = [disk("vda"), disk("vdb", "no")];
    it("snapshot='no': an internal snapshot is refused, naming the disk, the attribute and both ways out", () => {
        for (const state of ["shut off", "running"]) {
            const f = failures({}, scratch, state);
            assert.equal(f.length, 1, f.join("\n"));
            assert.match(f[0]!, /^kind: disk vdb \(\/var\/lib\/libvirt\/images\/web1-vdb\.qcow2\) says snapshot='no' in the domain XML/);
            assert.match(f[0]!, /'internal and full system snapshots require all disks to be selected for snapshot'/);
            assert.match(f[0]!, /Include it with disks: \[\{ name: 'vdb', snapshot: 'internal' \}\], or use kind: 'external'$/);
        }
    });
    it("snapshot='no': an external snapshot leaves the disk out; a disks entry still includes it", () => {
        assert.deepEqual(modes({ kind: "external" }, scratch), ["vda=external", "vdb=no"]);
        assert.deepEqual(modes({ disks: [{ name: "vdb", snapshot: "internal" }] }, scratch), ["vda=internal", "vdb=internal"]);
        assert.deepEqual(modes({ kind: "external", disks: [{ name: "vdb", snapshot: "external" }] }, scratch), [
            "vda=external",
            "vdb=external",
        ]);
    });
    it("a disks entry that leaves a writable disk out of an internal snapshot is refused too, at that entry", () => {
        const f = failures({ disks: [{ name: "vdb", snapshot: "no" }] }, [disk("vda"), disk("vdb")]);
        assert.equal(f.length, 1, f.join("\n"));
        assert.match(
            f[0]!,
            /^disks\[0\]\.snapshot: disks\[0\] leaves disk vdb .* out, .*Include it \(snapshot: 'internal'\), or use kind: 'external'$/,
        );
        // A read-only disk is no obstacle: libvirt's rule is about writable disks, and the plan leaves those to libvirt anyway.
        assert.deepEqual(modes({}, [disk("vda"), disk("vdb", "no", { readonly: true })]), ["vda=internal"]);
    });
    it("snapshot='external' or 'internal' that mixes modes with the other disks is refused, naming the attribute", () => {
        const ext = failures({}, [disk("vda"), disk("vdb", "external")]);
        assert.equal(ext.length, 1, ext.join("\n"));
        assert.match(
            ext[0]!,
            /^kind: disk vdb .* says snapshot='external' in the domain XML, so it would be external, and the other disks/,
        );
        assert.match(
            ext[0]!,
            /cannot mix internal and external .*Use kind: 'external', or override it with disks: \[\{ name: 'vdb', snapshot: 'internal' \}\]$/,
        );
        const int = failures({ kind: "external" }, [disk("vda"), disk("vdb", "internal")]);
        assert.equal(int.length, 1, int.join("\n"));
        assert.match(
            int[0]!,
            /says snapshot='internal' .*Use kind: 'internal', or override it with disks: \[\{ name: 'vdb', snapshot: 'external' \}\]$/,
        );
        assert.deepEqual(modes({ kind: "external" }, [disk("vda"), disk("vdb", "external")]), ["vda=external", "vdb=external"]);
        assert.deepEqual(modes({ disks: [{ name: "vdb", snapshot: "internal" }] }, [disk("vda"), disk("vdb", "external")]), [
            "vda=internal",
            "vdb=internal",
        ]);
    });
    it("a disk that says snapshot='external' is external however the kind leaves the others", () => {
        assert.deepEqual(modes({}, [disk("vda", "external")]), ["vda=external"]);
    });
    it("snapshot='manual' is refused unless a disks entry names the disk", () => {
        const f = failures({ kind: "external" }, [disk("vda"), disk("vdb", "manual")]);
        assert.equal(f.length, 1, f.join("\n"));
        assert.match(f[0]!, /^disks: disk vdb .* says snapshot='manual' in the domain XML: libvirt would leave its snapshot to you/);
        assert.match(f[0]!, /keep the domain paused/);
        assert.deepEqual(
            modes({ kind: "external", disks: [{ name: "vdb", snapshot: "external" }] }, [disk("vda"), disk("vdb", "manual")]),
            ["vda=external", "vdb=external"],
        );
    });
    it("a disk without the attribute follows the kind, as before", () => {
        assert.deepEqual(modes({}, [disk("vda"), disk("vdb")]), ["vda=internal", "vdb=internal"]);
        assert.deepEqual(modes({ kind: "external" }, [disk("vda"), disk("vdb")]), ["vda=external", "vdb=external"]);
    });
});
