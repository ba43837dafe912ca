// What the parsers read from disks and firmware that aren't plain files: the newer NVRAM form, stateless
// loaders, network disks by protocol, server and name, a disk's own snapshot policy, and snapshot overlays on
// block devices and the network. The XML follows libvirt's formatdomain and formatsnapshot docs, written here
// in the shapes libvirt prints (pretty-printed, single-quoted attributes).
import * as assert from "node:assert/strict";
import type { Virsh } from "../../provider/host/virsh";
import { overlayLocation, parseDomainXml, parseSnapshotXml } from "../../provider/host/xml";
import { coveredDisks } from "../../provider/moments/disks";
import { snapshotDataMissing } from "../../provider/resources/lostRecords";
import { fakeProbe } from "./fakeProbe";

const domain = (os: string, devices = "") =>
    `<domain type='kvm'>\n  <name>web1</name>\n  <uuid>11111111-2222-3333-4444-555555555555</uuid>\n` +
    `  <os>\n    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\n${os}  </os>\n  <devices>\n${devices}  </devices>\n</domain>\n`;

const LOADER = "    <loader readonly='yes' type='pflash' format='raw'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\n";

describe("parseDomainXml: firmware, the newer NVRAM form and stateless loaders", () => {
    it("reads the NVRAM's path from <nvram type='file'><source file/>, not the whitespace around it", () => {
        const d = parseDomainXml(
            domain(
                LOADER +
                    "    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd' templateFormat='raw' format='qcow2' type='file'>\n" +
                    "      <source file='/var/lib/libvirt/qemu/nvram/web1_VARS.qcow2'/>\n    </nvram>\n",
            ),
        );
        assert.deepEqual(d.pflash, {
            loader: "/usr/share/OVMF/OVMF_CODE_4M.fd",
            nvram: "/var/lib/libvirt/qemu/nvram/web1_VARS.qcow2",
            nvramFormat: "qcow2",
        });
    });
    it("reads an NVRAM on a block device or on the network by where it is", () => {
        const block = parseDomainXml(domain(LOADER + "    <nvram type='block'>\n      <source dev='/dev/vg0/web1-vars'/>\n    </nvram>\n"));
        assert.equal(block.pflash?.nvram, "/dev/vg0/web1-vars");
        const net = parseDomainXml(
            domain(
                LOADER +
                    "    <nvram type='network'>\n      <source protocol='iscsi' name='iqn.2024-01.net.example:vars/0'>\n" +
                    "        <host name='san1.example.net' port='3260'/>\n      </source>\n    </nvram>\n",
            ),
        );
        assert.equal(net.pflash?.nvram, "iscsi://san1.example.net:3260/iqn.2024-01.net.example:vars/0");
    });
    it("the older form, the path as the element's text, still reads as before", () => {
        const d = parseDomainXml(domain(LOADER + "    <nvram>/var/lib/libvirt/qemu/nvram/web1_VARS.fd</nvram>\n"));
        assert.deepEqual(d.pflash, {
            loader: "/usr/share/OVMF/OVMF_CODE_4M.fd",
            nvram: "/var/lib/libvirt/qemu/nvram/web1_VARS.fd",
            nvramFormat: "raw",
        });
    });
    it("tells a stateless loader (no variable store) apart from one with NVRAM", () => {
        const d = parseDomainXml(
            domain("    <loader readonly='yes' type='pflash' stateless='yes' format='raw'>/usr/share/OVMF/OVMF.amdsev.fd</loader>\n"),
        );
        assert.deepEqual(d.pflash, { loader: "/usr/share/OVMF/OVMF.amdsev.fd", nvramFormat: "raw", stateless: true });
        const withNvram = parseDomainXml(domain(LOADER + "    <nvram>/var/lib/libvirt/qemu/nvram/web1_VARS.fd</nvram>\n"));
        assert.equal(withNvram.pflash?.stateless, undefined);
    });
});

const rbd = (target: string, monitor: string) =>
    `    <disk type='network' device='disk'>\n      <driver name='qemu' type='raw'/>\n` +
    `      <source protocol='rbd' name='vms/web1-data'>\n        <host name='${monitor}' port='6789'/>\n      </source>\n` +
    `      <target dev='${target}' bus='virtio'/>\n    </disk>\n`;

describe("parseDomainXml: network disks and each disk's snapshot policy", () => {
    const d = parseDomainXml(
        domain(
            "",
            `    <disk type='file' device='disk' snapshot='no'>\n      <driver name='qemu' type='qcow2'/>\n` +
                `      <source file='/var/lib/libvirt/images/scratch.qcow2'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n` +
                `    <disk type='block' device='disk' snapshot='external'>\n      <driver name='qemu' type='raw'/>\n` +
                `      <source dev='/dev/vg0/web1'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>\n` +
                rbd("vdc", "ceph-a.example.net") +
                rbd("vdd", "ceph-b.example.net") +
                `    <disk type='network' device='disk'>\n      <driver name='qemu' type='raw'/>\n` +
                `      <source protocol='gluster' name='vol0/web1.img'>\n        <host name='gl1.example.net'/>\n` +
                `        <host name='gl2.example.net' port='24007'/>\n      </source>\n      <target dev='vde' bus='virtio'/>\n    </disk>\n` +
                `    <disk type='network' device='disk'>\n      <driver name='qemu' type='raw'/>\n` +
                `      <source protocol='nbd' name='export1'>\n        <host transport='unix' socket='/run/nbd/web1.sock'/>\n      </source>\n` +
                `      <target dev='vdf' bus='virtio'/>\n    </disk>\n`,
        ),
    );
    it("keeps a file's and a block device's source as their path, and reads the snapshot attribute", () => {
        assert.deepEqual(
            d.disks.slice(0, 2).map((x) => [x.target, x.type, x.source, x.snapshot]),
            [
                ["vda", "file", "/var/lib/libvirt/images/scratch.qcow2", "no"],
                ["vdb", "block", "/dev/vg0/web1", "external"],
            ],
        );
        assert.equal(d.disks[2]!.snapshot, undefined, "no attribute: libvirt's default applies");
    });
    it("reads a network disk by protocol, server(s) and name", () => {
        assert.deepEqual(d.disks[2]!.network, { protocol: "rbd", name: "vms/web1-data", hosts: ["ceph-a.example.net:6789"] });
        assert.equal(d.disks[2]!.source, "rbd://ceph-a.example.net:6789/vms/web1-data");
        assert.equal(d.disks[3]!.source, "rbd://ceph-b.example.net:6789/vms/web1-data", "same name, another server: another source");
        assert.equal(d.disks[4]!.source, "gluster://gl1.example.net,gl2.example.net:24007/vol0/web1.img");
        assert.equal(d.disks[5]!.source, "nbd://unix:/run/nbd/web1.sock/export1");
    });
    it("disks[].name finds a network disk by target, full location or a name only it has; a shared name is refused", () => {
        const failures: string[] = [];
        const fail = (property: string, reason: string) => failures.push(`${property}: ${reason}`);
        const picked = (name: string) =>
            coveredDisks([{ name }], d, fail)
                .filter((c) => c.entry)
                .map((c) => c.disk.target);
        assert.deepEqual(picked("vdd"), ["vdd"]);
        assert.deepEqual(picked("rbd://ceph-b.example.net:6789/vms/web1-data"), ["vdd"]);
        assert.deepEqual(picked("vol0/web1.img"), ["vde"]);
        assert.deepEqual(picked("/dev/vg0/web1"), ["vdb"]);
        assert.deepEqual(failures, []);
        assert.deepEqual(picked("vms/web1-data"), []);
        assert.equal(failures.length, 1);
        assert.match(failures[0]!, /^disks\[0\]\.name: 'vms\/web1-data' is the name of 2 network disks/);
        assert.match(failures[0]!, /vdc: rbd:\/\/ceph-a\.example\.net:6789\/vms\/web1-data, vdd: rbd:\/\/ceph-b/);
    });
});

describe("parseSnapshotXml: overlays on block devices and on the network", () => {
    const xml =
        "<domainsnapshot>\n  <name>s1</name>\n  <state>disk-snapshot</state>\n  <creationTime>1764950000</creationTime>\n" +
        "  <memory snapshot='no'/>\n  <disks>\n" +
        "    <disk name='vda' snapshot='external' type='file'>\n      <driver type='qcow2'/>\n" +
        "      <source file='/var/lib/libvirt/images/web1.s1'/>\n    </disk>\n" +
        "    <disk name='vdb' snapshot='external' type='block'>\n      <driver type='qcow2'/>\n" +
        "      <source dev='/dev/vg0/web1-s1'/>\n    </disk>\n" +
        "    <disk name='vdc' snapshot='external' type='network'>\n      <driver type='qcow2'/>\n" +
        "      <source protocol='gluster' name='vol0/web1-s1.qcow2'>\n        <host name='gl1.example.net' port='24007'/>\n" +
        "      </source>\n    </disk>\n    <disk name='vdd' snapshot='no'/>\n  </disks>\n</domainsnapshot>\n";
    const s = parseSnapshotXml(xml);
    it("names each overlay: a file's or a block device's path, a network overlay's location", () => {
        assert.deepEqual(
            s.disks.map((d) => [d.name, d.type, d.file, overlayLocation(d)]),
            [
                ["vda", "file", "/var/lib/libvirt/images/web1.s1", "/var/lib/libvirt/images/web1.s1"],
                ["vdb", "block", "/dev/vg0/web1-s1", "/dev/vg0/web1-s1"],
                ["vdc", "network", undefined, "gluster://gl1.example.net:24007/vol0/web1-s1.qcow2"],
                ["vdd", undefined, undefined, undefined],
            ],
        );
    });
    it("a lost record's check reads the block overlay, and says why a network overlay is not checked, never 'unnamed'", async () => {
        const asked: string[] = [];
        const virsh = {
            host: async (argv: string[]) => {
                const file = argv[argv.length - 1]!;
                asked.push(file);
                return { code: 0, stdout: JSON.stringify([{ filename: file, format: "qcow2" }]), stderr: "" };
            },
        } as unknown as Virsh;
        const missing = await snapshotDataMissing(virsh, fakeProbe({ state: "shut off" }), s);
        assert.deepEqual(asked, ["/var/lib/libvirt/images/web1.s1", "/dev/vg0/web1-s1"]);
        assert.deepEqual(missing, [
            "the overlay of disk vdc is on the network (gluster://gl1.example.net:24007/vol0/web1-s1.qcow2), where the host can't check it",
        ]);
    });
});
