// A DomainProbe as probeDomain() would return it for one typical domain, for the
// host-free plan tests: a qcow2 disk vda and a read-only cdrom sda.
import type { DomainProbe } from "../../provider/host/probe";

export interface FakeProbeOptions {
    state?: string;
    format?: string;
    agent?: "none" | "connected" | "disconnected";
    /** libvirt's number, major*1e6 + minor*1e3 + micro; the text follows from it. Default 9.0.0. */
    version?: number;
    checkpoints?: string[];
    disks?: DomainProbe["info"]["disks"];
}

const versionText = (n: number) => `${Math.floor(n / 1_000_000)}.${Math.floor(n / 1000) % 1000}.${n % 1000}`;

export function fakeProbe(over: FakeProbeOptions = {}): DomainProbe {
    const state = over.state ?? "running";
    const version = over.version ?? 9_000_000;
    return {
        info: {
            name: "web1",
            uuid: "11111111-2222-3333-4444-555555555555",
            guestAgent: over.agent ?? "none",
            disks: over.disks ?? [
                {
                    target: "vda",
                    device: "disk",
                    type: "file",
                    format: over.format ?? "qcow2",
                    source: "/var/lib/libvirt/images/web1.qcow2",
                    readonly: false,
                },
                { target: "sda", device: "cdrom", type: "file", format: "raw", source: "/iso/x.iso", readonly: true },
            ],
        },
        state,
        active: state !== "shut off",
        version: { libvirt: versionText(version), number: version, hypervisor: "QEMU 7.2.0" },
        checkpointsWhileOff: over.checkpoints ?? [],
    };
}
