// UEFI (pflash) firmware and block-device disks, without a host: what the domain XML
// says about them, and what planSnapshot refuses. test/specialDomains.test.ts proves
// the same rules against both lab hosts.
import * as assert from "node:assert/strict";
import { parseInputs } from "../../provider/inputs";
import { DomainSnapshotSchema } from "../../provider/resources/domainSnapshot";
import { planSnapshot } from "../../provider/snapshot/plan";
import { parseDomainXml, type PflashFirmware } from "../../provider/host/xml";
import type { DomainProbe } from "../../provider/host/probe";
import { fakeProbe, type FakeProbeOptions } from "./fakeProbe";

const domain = (os: string, disk = "") =>
    `<domain type='qemu'><name>web1</name><uuid>11111111-2222-3333-4444-555555555555</uuid>${os}<devices>${disk}</devices></domain>`;

describe("parseDomainXml: firmware", () => {
    it("reads a pflash loader and its NVRAM's format; 'raw' where libvirt names none", () => {
        const q = parseDomainXml(
            domain(
                `<os><type>hvm</type><loader readonly='yes' type='pflash' format='raw'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>` +
                    `<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd' format='qcow2'>/var/lib/web1_VARS.qcow2</nvram></os>`,
            ),
        );
        assert.deepEqual(q.pflash, { loader: "/usr/share/OVMF/OVMF_CODE_4M.fd", nvram: "/var/lib/web1_VARS.qcow2", nvramFormat: "qcow2" });
        const raw = parseDomainXml(
            domain(
                `<os><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader><nvram>/var/lib/web1_VARS.fd</nvram></os>`,
            ),
        );
        assert.equal(raw.pflash?.nvramFormat, "raw");
    });
    it("firmware='efi' whose loader libvirt has not chosen yet is not (yet) pflash, nor are BIOS and a ROM loader", () => {
        // libvirt 9.0 chooses the loader at start only, and snapshots such a shut-off domain internally (measured).
        assert.equal(parseDomainXml(domain(`<os firmware='efi'><type>hvm</type></os>`)).pflash, undefined);
        assert.equal(parseDomainXml(domain(`<os><type>hvm</type><boot dev='hd'/></os>`)).pflash, undefined);
        assert.equal(parseDomainXml(domain(`<os><loader type='rom'>/usr/share/seabios/bios.bin</loader></os>`)).pflash, undefined);
    });
    it("reads a block-device disk's source", () => {
        const d = parseDomainXml(
            domain(
                "<os/>",
                `<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/loop3'/><target dev='vda'/></disk>`,
            ),
        );
        assert.deepEqual(d.disks, [{ target: "vda", device: "disk", type: "block", format: "raw", source: "/dev/loop3", readonly: false }]);
    });
});

describe("planSnapshot: UEFI firmware and block devices", () => {
    const OVMF = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    const probe = (o: FakeProbeOptions & { pflash?: PflashFirmware }): DomainProbe => {
        const p = fakeProbe(o);
        return o.pflash ? { ...p, info: { ...p.info, pflash: o.pflash } } : p;
    };
    const plan = (inputs: Record<string, unknown>, p: DomainProbe) => {
        const r = parseInputs(DomainSnapshotSchema, { domain: "web1", snapshotName: "s1", ...inputs }, { allowUnknowns: false });
        assert.ok(r.ok, JSON.stringify(r));
        return planSnapshot(r.value, p);
    };
    const failures = (inputs: Record<string, unknown>, p: DomainProbe) =>
        plan(inputs, p)
            .failures.map((f) => `${f.property}: ${f.reason}`)
            .join("\n");
    const raw: PflashFirmware = { loader: OVMF, nvram: "/var/lib/web1_VARS.fd", nvramFormat: "raw" };
    const qcow2: PflashFirmware = { loader: OVMF, nvram: "/var/lib/web1_VARS.qcow2", nvramFormat: "qcow2" };

    it("before 10.9: no internal snapshot of a pflash domain, running or shut off, whatever its NVRAM", () => {
        for (const state of ["running", "shut off"]) {
            for (const pflash of [raw, qcow2]) {
                assert.match(
                    failures({}, probe({ state, version: 9_000_000, pflash })),
                    /^kind: domain 'web1' boots UEFI firmware from pflash \(<loader type='pflash'> \/usr\/share\/OVMF\/OVMF_CODE_4M\.fd\), and libvirt 9\.0\.0 takes no internal snapshot of such a domain \('internal snapshots of a VM with pflash based firmware are not supported'; 10\.9 and newer can, with the NVRAM in qcow2\)\. Use kind: 'external'$/,
                );
            }
        }
        // The property that asked for the internal disk snapshot is the one named.
        assert.match(
            failures(
                { kind: "external", disks: [{ name: "vda", snapshot: "internal" }] },
                probe({ state: "shut off", version: 10_008_000, pflash: raw }),
            ),
            /^disks\[0\]\.snapshot: domain 'web1' boots UEFI firmware from pflash/,
        );
        assert.equal(failures({ kind: "external" }, probe({ version: 9_000_000, pflash: raw })), "", "external snapshots are fine");
    });
    it("from 10.9: a running domain's internal snapshot needs a qcow2 NVRAM; a shut-off domain's takes any", () => {
        assert.match(
            failures({}, probe({ version: 11_003_000, pflash: raw })),
            /^kind: domain 'web1' boots UEFI firmware from pflash .*, and its UEFI variables \(NVRAM \/var\/lib\/web1_VARS\.fd\) are raw: .*\('require QCOW2 nvram format'\)\. Use kind: 'external'/,
        );
        assert.equal(failures({}, probe({ version: 11_003_000, pflash: qcow2 })), "");
        assert.equal(failures({}, probe({ state: "shut off", version: 11_003_000, pflash: raw })), "");
        assert.equal(failures({}, probe({ version: 10_009_000, pflash: qcow2 })), "", "from the first version of the range");
    });
    const blockDisk = { target: "vda", device: "disk", type: "block", format: "raw", source: "/dev/loop3", readonly: false };
    it("an external snapshot of a block device needs its overlay's path; memory never defaults to /dev", () => {
        assert.match(
            failures({ kind: "external", memory: "none" }, probe({ disks: [blockDisk] })),
            /^kind: disk vda is a block device \(\/dev\/loop3\), and libvirt names an external snapshot's overlay only beside a regular file\. Give its overlay a path with DomainSnapshot's disks: \[\{ name: 'vda', snapshot: 'external', file: /,
        );
        assert.match(
            failures({ kind: "external", memory: "none", disks: [{ name: "vda", snapshot: "external" }] }, probe({ disks: [blockDisk] })),
            /^disks\[0\]\.file: disk vda is a block device/,
        );
        const ok = plan(
            { kind: "external", memory: "none", disks: [{ name: "vda", snapshot: "external", file: "/o/vda.qcow2" }] },
            probe({ disks: [blockDisk] }),
        );
        assert.deepEqual(ok.failures, []);
        assert.deepEqual(ok.plan!.spec.disks, [{ name: "vda", snapshot: "external", file: "/o/vda.qcow2" }]);
        assert.match(
            failures(
                { kind: "external", memory: "external", disks: [{ name: "vda", snapshot: "external", file: "/o/vda.qcow2" }] },
                probe({ disks: [blockDisk] }),
            ),
            /^memoryFile: is required with memory: 'external' when the domain has no file-backed disk to put it beside$/,
        );
    });
    it("an internal snapshot of a raw block device is refused as of any raw disk; a qcow2 one is planned", () => {
        assert.match(
            failures({}, probe({ disks: [blockDisk] })),
            /^kind: an internal snapshot lives inside a qcow2 image, but disk vda \(\/dev\/loop3\) is raw\./,
        );
        assert.equal(failures({}, probe({ disks: [{ ...blockDisk, format: "qcow2" }] })), "");
    });
});
