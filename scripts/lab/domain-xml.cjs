#!/usr/bin/env node
// The XML of the lab's small domains (no OS, a boot sector at most), used by
// scripts/lab.sh, scripts/lab/host13.sh and the tests (test/support/lab.ts),
// so every host's domains have the same shape: 64 MiB, 1 vcpu, pc, a virtio
// disk, no NIC.
//
//   const { labDomainXml } = require("./domain-xml.cjs");
//   node domain-xml.cjs --name N --title T --virt-type kvm|qemu --disk D --format qcow2|raw [--uuid U]
"use strict";

function esc(value) {
    return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]);
}

// Optional, for the special domains of test/support/specialDomains.ts:
//   diskType: 'block' (o.disk is then a block device), default 'file';
//   uefi: { loader, nvram, nvramFormat?, template? }: UEFI firmware in pflash with its own NVRAM
//     (UEFI needs ACPI; OVMF's non-SMM build boots on machine 'pc'); or uefi: { auto: true }:
//     <os firmware='efi'>, libvirt chooses the loader and makes the NVRAM;
//   tpm: true: an emulated TPM 2.0 (swtpm);
//   extraDisks: [{ file, format, target, snapshot? }]: more file-backed virtio disks after vda, each with
//     the domain's own snapshot policy for it (<disk snapshot='no'|'internal'|'external'|'manual'>) when given.
function labDomainXml(o) {
    for (const k of ["name", "title", "virtType", "disk", "format"]) {
        if (typeof o[k] !== "string" || o[k] === "") throw new Error(`labDomainXml: ${k} is required`);
    }
    const block = o.diskType === "block";
    if (o.diskType !== undefined && o.diskType !== "file" && !block) throw new Error(`labDomainXml: diskType ${o.diskType}`);
    const extra = (o.extraDisks ?? [])
        .map(
            (d) => `
    <disk type='file' device='disk'${d.snapshot ? ` snapshot='${esc(d.snapshot)}'` : ""}>
      <driver name='qemu' type='${esc(d.format)}' cache='writethrough'/>
      <source file='${esc(d.file)}'/>
      <target dev='${esc(d.target)}' bus='virtio'/>
    </disk>`,
        )
        .join("");
    const u = o.uefi;
    const firmware =
        u && !u.auto
            ? `
    <loader readonly='yes' type='pflash'>${esc(u.loader)}</loader>
    <nvram${u.template ? ` template='${esc(u.template)}'` : ""}${u.nvramFormat ? ` format='${esc(u.nvramFormat)}'` : ""}>${esc(u.nvram)}</nvram>
    `
            : "";
    // cache='writethrough' makes qemu flush after each guest write, so the qcow2 metadata
    // reaches the file and 'qemu-io -U -r' from outside sees the guest's new clusters.
    return `<domain type='${esc(o.virtType)}'>
  <name>${esc(o.name)}</name>${o.uuid ? `\n  <uuid>${esc(o.uuid)}</uuid>` : ""}
  <title>${esc(o.title)}</title>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os${u && u.auto ? " firmware='efi'" : ""}><type arch='x86_64' machine='pc'>hvm</type>${firmware}<boot dev='hd'/></os>${u ? "\n  <features><acpi/></features>" : ""}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='${block ? "block" : "file"}' device='disk'>
      <driver name='qemu' type='${esc(o.format)}' cache='writethrough'/>
      <source ${block ? "dev" : "file"}='${esc(o.disk)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>${extra}
    <controller type='usb' model='none'/>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <video><model type='none'/></video>
    <memballoon model='none'/>${o.tpm ? "\n    <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>" : ""}
  </devices>
</domain>
`;
}

module.exports = { labDomainXml };

if (require.main === module) {
    const args = process.argv.slice(2);
    const o = {};
    const keys = {
        "--name": "name",
        "--title": "title",
        "--virt-type": "virtType",
        "--disk": "disk",
        "--format": "format",
        "--uuid": "uuid",
    };
    for (let i = 0; i < args.length; i += 2) {
        const k = keys[args[i]];
        if (!k || args[i + 1] === undefined) {
            console.error(`domain-xml.cjs: unknown or incomplete option ${args[i]}`);
            process.exit(2);
        }
        o[k] = args[i + 1];
    }
    process.stdout.write(labDomainXml(o));
}
