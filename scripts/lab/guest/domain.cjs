#!/usr/bin/env node
// libvirt domain XML for the lab's real Linux guest (kernel + initramfs from build.sh).
//
//   const { guestDomainXml } = require("./domain.cjs");
//   guestDomainXml({ name, kernel, initrd, disk, format: "qcow2" })
//
//   node domain.cjs --name X --kernel K --initrd I --disk D [--format qcow2|raw]
//        [--memory MiB] [--virt-type qemu|kvm] [--uuid U] [--title T] [--cmdline C]
//        [--serial-log FILE] [--no-acpi]
//
// Why each element is (or is not) there:
// - type='qemu' (TCG) by default: a KVM that can't boot Linux (nested kvm_pvm) would
//   otherwise fail the guest; only a caller that probed KVM booting Linux passes 'kvm'.
// - <kernel>/<initrd>/<cmdline>: direct boot, no firmware disk lookup, no bootloader.
// - the virtio channel named org.qemu.guest_agent.0 is how libvirt finds qemu-ga.
// - ACPI: both shutdown paths need it. `virsh shutdown` (agent: guest-shutdown) and
//   `--mode acpi` (power button, busybox acpid) both end in the guest's poweroff; without
//   ACPI that only halts the CPU and the domain stays running (measured: --no-acpi).
// - no <cpu>: host-passthrough and host-model crash qemu under nested KVM.
// - no <graphics> (type='none' is invalid), video model none, no balloon, no NIC,
//   no USB: less to emulate, faster boot, smaller qemu.
"use strict";

const MIN_MEMORY_MIB = 96; // the least the Debian 6.1 kernel + this initramfs boots with

function esc(value) {
    // XML 1.0 can't carry these at all, escaped or not; libvirt would reject the document.
    if (/[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/.test(String(value)))
        throw new Error(`guestDomainXml: control character in ${JSON.stringify(String(value))}`);
    return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]);
}

function need(opts, key) {
    const v = opts[key];
    if (typeof v !== "string" || v === "") throw new Error(`guestDomainXml: ${key} is required (a non-empty string)`);
    return v;
}

function absPath(opts, key) {
    const v = need(opts, key);
    // libvirt resolves relative paths against its own cwd, not the caller's.
    if (!v.startsWith("/")) throw new Error(`guestDomainXml: ${key} must be an absolute path, got ${JSON.stringify(v)}`);
    return v;
}

/**
 * @param {object} opts
 * @param {string} opts.name         domain name (the lab uses labguest-* or a test's own prefix)
 * @param {string} [opts.uuid]
 * @param {string} [opts.title]
 * @param {string} opts.kernel       absolute path of build.sh's vmlinux
 * @param {string} opts.initrd       absolute path of build.sh's initramfs.gz
 * @param {string} opts.disk         absolute path of the guest's disk (ext4 is made on first boot)
 * @param {"qcow2"|"raw"} [opts.format="qcow2"]
 * @param {number} [opts.memoryMiB=128]
 * @param {"qemu"|"kvm"} [opts.virtType="qemu"]
 * @param {string} [opts.cmdline="console=ttyS0 quiet"]
 * @param {string} [opts.serialLog]  absolute path: qemu also writes the serial console there
 * @param {boolean} [opts.acpi=true]
 * @returns {string} domain XML
 */
function guestDomainXml(opts) {
    if (!opts || typeof opts !== "object") throw new Error("guestDomainXml: options object required");
    const name = need(opts, "name");
    const kernel = absPath(opts, "kernel");
    const initrd = absPath(opts, "initrd");
    const disk = absPath(opts, "disk");
    const format = opts.format === undefined ? "qcow2" : opts.format;
    if (format !== "qcow2" && format !== "raw")
        throw new Error(`guestDomainXml: format must be qcow2 or raw, got ${JSON.stringify(format)}`);
    const virtType = opts.virtType === undefined ? "qemu" : opts.virtType;
    if (virtType !== "qemu" && virtType !== "kvm")
        throw new Error(`guestDomainXml: virtType must be qemu or kvm, got ${JSON.stringify(virtType)}`);
    const memoryMiB = opts.memoryMiB === undefined ? 128 : opts.memoryMiB;
    if (!Number.isInteger(memoryMiB) || memoryMiB < MIN_MEMORY_MIB) {
        throw new Error(
            `guestDomainXml: memoryMiB must be an integer >= ${MIN_MEMORY_MIB} (the kernel does not boot with less), got ${JSON.stringify(memoryMiB)}`,
        );
    }
    if (
        opts.uuid !== undefined &&
        !/^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/.test(String(opts.uuid))
    ) {
        throw new Error(`guestDomainXml: uuid is not a UUID: ${JSON.stringify(opts.uuid)}`);
    }
    const cmdline = opts.cmdline === undefined ? "console=ttyS0 quiet" : String(opts.cmdline);
    const serialLog = opts.serialLog === undefined ? undefined : absPath(opts, "serialLog");
    const acpi = opts.acpi === undefined ? true : opts.acpi;
    if (typeof acpi !== "boolean") throw new Error(`guestDomainXml: acpi must be a boolean, got ${JSON.stringify(acpi)}`);

    const lines = [`<domain type='${esc(virtType)}'>`, `  <name>${esc(name)}</name>`];
    if (opts.uuid !== undefined) lines.push(`  <uuid>${esc(opts.uuid)}</uuid>`);
    if (opts.title !== undefined) lines.push(`  <title>${esc(opts.title)}</title>`);
    lines.push(
        `  <memory unit='MiB'>${memoryMiB}</memory>`,
        `  <vcpu>1</vcpu>`,
        `  <os>`,
        `    <type arch='x86_64' machine='pc'>hvm</type>`,
        `    <kernel>${esc(kernel)}</kernel>`,
        `    <initrd>${esc(initrd)}</initrd>`,
        `    <cmdline>${esc(cmdline)}</cmdline>`,
        `  </os>`,
    );
    if (acpi) lines.push(`  <features><acpi/></features>`);
    lines.push(
        `  <on_poweroff>destroy</on_poweroff>`,
        `  <on_reboot>restart</on_reboot>`,
        `  <on_crash>destroy</on_crash>`,
        `  <devices>`,
        `    <emulator>/usr/bin/qemu-system-x86_64</emulator>`,
        `    <disk type='file' device='disk'>`,
        `      <driver name='qemu' type='${esc(format)}' cache='writethrough'/>`,
        `      <source file='${esc(disk)}'/>`,
        `      <target dev='vda' bus='virtio'/>`,
        `    </disk>`,
        `    <controller type='usb' model='none'/>`,
        `    <channel type='unix'>`,
        `      <target type='virtio' name='org.qemu.guest_agent.0'/>`,
        `    </channel>`,
        serialLog === undefined
            ? `    <serial type='pty'><target port='0'/></serial>`
            : `    <serial type='pty'><log file='${esc(serialLog)}' append='off'/><target port='0'/></serial>`,
        `    <console type='pty'><target type='serial' port='0'/></console>`,
        `    <video><model type='none'/></video>`,
        `    <memballoon model='none'/>`,
        `  </devices>`,
        `</domain>`,
    );
    return lines.join("\n") + "\n";
}

module.exports = { guestDomainXml, MIN_MEMORY_MIB };

if (require.main === module) {
    const flags = {
        "--name": ["name", String],
        "--uuid": ["uuid", String],
        "--title": ["title", String],
        "--kernel": ["kernel", String],
        "--initrd": ["initrd", String],
        "--disk": ["disk", String],
        "--format": ["format", String],
        "--memory": ["memoryMiB", Number],
        "--virt-type": ["virtType", String],
        "--cmdline": ["cmdline", String],
        "--serial-log": ["serialLog", String],
    };
    const switches = { "--no-acpi": ["acpi", false] };
    const usage =
        "usage: node domain.cjs --name X --kernel K --initrd I --disk D [--format qcow2|raw] [--memory MiB]\n" +
        "         [--virt-type qemu|kvm] [--uuid U] [--title T] [--cmdline C] [--serial-log FILE] [--no-acpi]";
    const args = process.argv.slice(2);
    const opts = {};
    try {
        for (let i = 0; i < args.length; i++) {
            let flag = args[i],
                value;
            const eq = flag.indexOf("=");
            if (flag.startsWith("--") && eq > 0) {
                value = flag.slice(eq + 1);
                flag = flag.slice(0, eq);
            }
            if (flag === "-h" || flag === "--help") {
                process.stdout.write(usage + "\n");
                process.exit(0);
            }
            if (switches[flag] && value === undefined) {
                opts[switches[flag][0]] = switches[flag][1];
                continue;
            }
            const spec = flags[flag];
            if (!spec) throw new Error(`unknown argument ${JSON.stringify(flag)}`);
            if (value === undefined) {
                if (i + 1 >= args.length) throw new Error(`${flag} needs a value`);
                value = args[++i];
            }
            opts[spec[0]] = spec[1](value);
        }
        process.stdout.write(guestDomainXml(opts));
    } catch (e) {
        process.stderr.write(`domain.cjs: ${e.message}\n${usage}\n`);
        process.exit(2);
    }
}
