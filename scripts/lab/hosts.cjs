#!/usr/bin/env node
// Writes LABDIR/lab.json: lab-base.json's top-level fields, `pulumi` (LABDIR/pulumi.json) and `hosts`, one entry per lab host,
// the Debian 12 host from those top-level fields (which stay, because tools read them) and the
// Debian 13 host from LABDIR/host13/host.json, each with its real guest.
//
//   node hosts.cjs LABDIR BASE_GUEST_JSON HOST13_GUEST_JSON
//
// Writes only when something changed; prints "changed" or "same".
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const [labDir, baseGuest, host13Guest] = process.argv.slice(2);
if (!labDir || !baseGuest || !host13Guest) {
    console.error("usage: hosts.cjs LABDIR BASE_GUEST_JSON HOST13_GUEST_JSON");
    process.exit(2);
}
const labPath = path.join(labDir, "lab.json");
const lab = JSON.parse(fs.readFileSync(path.join(labDir, "lab-base.json"), "utf8"));
const host13 = JSON.parse(fs.readFileSync(path.join(labDir, "host13", "host.json"), "utf8"));

// What a client needs to reach a host, and what the tests need to look at it from this machine.
const FIELDS = [
    "name",
    "host",
    "port",
    "user",
    "privateKeyPath",
    "encryptedKeyPath",
    "hostKey",
    "hostKeyPath",
    "knownHostsPath",
    "libvirtUri",
    "libvirtVersion",
    "qemuVersion",
    "virtType",
    "tmpDiskDir",
    "bootSectorPath",
    "writerLayout",
    "domains",
];
const entry = (src, extra) => {
    const out = {};
    for (const k of FIELDS) if (src[k] !== undefined) out[k] = src[k];
    return { ...out, ...extra };
};
const withGuest = (domains, guest) => [...domains.filter((d) => d.name !== guest.name), guest];

const hosts = [
    // On this machine: the provider may also run virsh here without SSH.
    entry(
        { ...lab, name: "debian12" },
        { local: true, sshdPidPath: path.join(labDir, "sshd.pid"), domains: withGuest(lab.domains, JSON.parse(baseGuest)) },
    ),
    // Its own network namespace: reached over SSH only. Tests inspect it with its own
    // binaries through `chroot rootDir`, which sees LABDIR at the same path.
    entry(host13, {
        local: false,
        rootDir: host13.rootDir,
        sshdPidPath: path.join(labDir, "host13", "sshd.pid"),
        domains: withGuest(host13.domains, JSON.parse(host13Guest)),
    }),
];

// The Pulumi CLI scripts/lab/pulumi-cli/ensure.sh found or built (absolute paths), or null with the reason.
const pulumiJson = path.join(labDir, "pulumi.json");
const pulumi = fs.existsSync(pulumiJson)
    ? JSON.parse(fs.readFileSync(pulumiJson, "utf8"))
    : { bin: null, version: null, languageHost: null, reason: `${pulumiJson} is missing: scripts/lab/pulumi-cli/ensure.sh did not run` };

const next = JSON.stringify({ ...lab, pulumi, hosts }, null, 2) + "\n";
const prev = fs.existsSync(labPath) ? fs.readFileSync(labPath, "utf8") : "";
if (next === prev) {
    console.log("same");
} else {
    const tmp = `${labPath}.${process.pid}`;
    fs.writeFileSync(tmp, next, { mode: 0o600 });
    fs.renameSync(tmp, labPath);
    console.log("changed");
}
