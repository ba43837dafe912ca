// The rows of the README's compatibility table: [key, what is asked of libvirt, the cell
// read from libvirt's NEWS for READ_COLUMN]. Tests record what each host did per key
// (test/support/compat.ts); scripts/compat-table.cjs writes the table.
"use strict";
const ROWS = [
    [
        "internal-offline-with-checkpoints",
        "internal snapshot of a shut-off domain that has checkpoints",
        "refused (read: no NEWS entry; the provider treats it as 9.0)",
    ],
    [
        "external-offline-with-checkpoints",
        "external disk-only snapshot of a shut-off domain that has checkpoints",
        "refused (read: refused on 9.0 and 11.3)",
    ],
    [
        "internal-running-name-with-space",
        "internal snapshot of a running domain named `before upgrade`",
        "works (read: qemu jobs named after snapshots came in 10.9, NEWS)",
    ],
    [
        "external-nonleaf-delete-offline",
        "delete a non-leaf external snapshot of a shut-off domain",
        "works (read: `<externalSnapshot/>`, since 9.9, means libvirt deletes and reverts external snapshots; not measured)",
    ],
    ["external-revert", "revert to an external snapshot (`<externalSnapshot/>` in capabilities)", "works (read: NEWS 9.9)"],
    ["checkpoint-create-offline", "create a checkpoint of a shut-off domain", "refused (read: refused on 9.0 and 11.3)"],
    ["checkpoint-delete-offline", "delete a checkpoint of a shut-off domain", "refused (read: refused on 9.0 and 11.3)"],
    [
        "external-delete-after-internal-revert",
        "delete an external snapshot after a revert to its internal parent (virt-manager #811)",
        "refused (read: 9.9 to 10.x delete the base image with it, libvirt #734, fixed in 11.0; the provider refuses it)",
    ],
    [
        "chain-26-images-start",
        "start a domain whose disk chain holds 26 images (25 start on every host)",
        "works (read: libvirt 10.8 to 11.x fail, 'nesting too deep', fixed in 12.0)",
    ],
    [
        "uefi-internal-running-raw-nvram",
        "internal snapshot of a running UEFI (pflash) domain, raw NVRAM",
        "refused (read: internal snapshots of pflash domains came in 10.9/10.10, NEWS)",
    ],
    [
        "uefi-internal-running-qcow2-nvram",
        "internal snapshot of a running UEFI (pflash) domain, qcow2 NVRAM (`<nvram format='qcow2'>`)",
        "refused (read: 10.9/10.10, NEWS)",
    ],
    [
        "uefi-internal-offline-raw-nvram",
        "internal snapshot of a shut-off UEFI (pflash) domain, raw NVRAM (the NVRAM is left out)",
        "refused (read: 10.9/10.10, NEWS)",
    ],
    [
        "uefi-auto-internal-offline",
        "internal snapshot of a shut-off domain with `<os firmware='efi'>` (libvirt chooses the loader), never started",
        "not known (9.0 chooses the loader at start, 11.3 at define, both measured; when that changed is not in the NEWS read here)",
    ],
    ["uefi-external", "external snapshot with memory of a running UEFI (pflash) domain", "works (read: not limited by NEWS)"],
    ["block-internal-raw", "internal snapshot of a raw block device (a loop device)", "refused (read: raw holds no snapshot)"],
    ["block-internal-qcow2", "internal snapshot of a running domain whose block device holds qcow2", "works (read: not limited by NEWS)"],
    [
        "block-external-unnamed",
        "external snapshot of a block device, no overlay path given",
        "refused (read: libvirt names overlays only beside regular files)",
    ],
    ["block-external", "external disk-only snapshot of a block device, overlay path given", "works (read: not limited by NEWS)"],
    ["tpm-internal", "internal snapshot with memory of a running domain with an emulated TPM (swtpm)", "works (read: not limited by NEWS)"],
    ["tpm-external-memory", "external snapshot with memory of a running domain with an emulated TPM", "works (read: not limited by NEWS)"],
    ["tpm-external-disk-only", "external disk-only snapshot of a running domain with an emulated TPM", "works (read: not limited by NEWS)"],
];
const READ_COLUMN = "10.0 (Ubuntu 24.04, read)";

module.exports = { ROWS, READ_COLUMN };
