#!/usr/bin/env node
// Reads the real guest's writer counter from the HOST, without the guest.
//
// The guest keeps it in two places on /dev/vda (see init):
//  - raw: sector 0, "LABGUEST <counter, 16 digits> <boot, 8 digits>\n" (35 bytes). ext4
//    never uses the first 1024 bytes of its device, so this survives beside the
//    filesystem. It is written after the file line is fsynced: raw <= file <= raw + 1.
//    Read live with `qemu-io -U -r` (qemu holds the write lock, reading is still allowed).
//  - file: /counter on the ext4, one decimal counter per line. Read from a raw copy
//    (`qemu-img convert -U`) with debugfs; a copy taken while the guest was not frozen
//    may need its journal replayed first (`e2fsck -fy`, on the copy only).
//
//   const { readRawCounter, readFileCounter } = require("./counter.cjs");
//   readRawCounter("/path/disk.qcow2")                  -> { counter: 42, boot: 3 } | null
//   readRawCounter(disk, { snapshot: "s1" })            internal snapshot's copy
//   readFileCounter(disk, { tmpDir })                   -> { counter, lines, journalReplayed, clean }
//
//   node counter.cjs DISK [--format qcow2|raw] [--snapshot NAME] [--file]
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const RAW_LENGTH = 35;
const RAW_RE = /^LABGUEST (\d{16}) (\d{8})\n$/;

function run(cmd, args) {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C" } });
}

/** Parses the 35-byte raw record; null when the sector holds none (never booted, or just formatted). */
function parseRaw(buf) {
    const m = RAW_RE.exec(Buffer.from(buf).subarray(0, RAW_LENGTH).toString("latin1"));
    return m ? { counter: Number(m[1]), boot: Number(m[2]) } : null;
}

function copyToRaw(disk, format, snapshot, dir) {
    const out = path.join(dir, "copy.raw");
    const args = ["convert", "-U", "-f", format, "-O", "raw"];
    if (snapshot !== undefined) args.push("-l", `snapshot.name=${snapshot}`);
    run("qemu-img", [...args, disk, out]);
    return out;
}

function withTmp(tmpDir, fn) {
    const dir = fs.mkdtempSync(path.join(tmpDir || os.tmpdir(), "labguest-counter-"));
    try {
        return fn(dir);
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
}

/** The raw counter of the disk's current state (or of an internal snapshot). */
function readRawCounter(disk, opts = {}) {
    const format = opts.format || "qcow2";
    if (opts.snapshot !== undefined) {
        return withTmp(opts.tmpDir, (dir) => {
            const fd = fs.openSync(copyToRaw(disk, format, opts.snapshot, dir), "r");
            try {
                const buf = Buffer.alloc(RAW_LENGTH);
                fs.readSync(fd, buf, 0, RAW_LENGTH, 0);
                return parseRaw(buf);
            } finally {
                fs.closeSync(fd);
            }
        });
    }
    // qemu-io prints "00000000:  4c 41 ...  ascii"; keep the hex columns only.
    const out = run("qemu-io", ["-U", "-r", "-f", format, "-c", `read -v 0 ${RAW_LENGTH}`, disk]);
    const bytes = [];
    for (const line of out.split("\n")) {
        const m = /^[0-9a-f]{8}:((?: [0-9a-f]{2})+)/.exec(line.replace(/: {2}/, ": "));
        if (m) for (const h of m[1].trim().split(" ")) bytes.push(parseInt(h, 16));
    }
    return parseRaw(Buffer.from(bytes));
}

/** The last line of /counter on the ext4, from a raw copy of the disk. */
function readFileCounter(disk, opts = {}) {
    const format = opts.format || "qcow2";
    return withTmp(opts.tmpDir, (dir) => {
        const raw = copyToRaw(disk, format, opts.snapshot, dir);
        const header = run("dumpe2fs", ["-h", raw]);
        const needsRecovery = /^Filesystem features:.*\bneeds_recovery\b/m.test(header);
        let journalReplayed = false;
        if (needsRecovery) {
            // e2fsck exits 1 when it repaired (here: replayed the journal) and 0 when clean.
            try {
                run("e2fsck", ["-fy", raw]);
            } catch (e) {
                if (e.status !== 1) throw e;
            }
            journalReplayed = true;
        }
        const text = run("debugfs", ["-R", "cat /counter", raw]);
        const lines = text.split("\n").filter((l) => /^\d+$/.test(l));
        return {
            counter: lines.length ? Number(lines[lines.length - 1]) : null,
            lines: lines.length,
            journalReplayed,
            clean: !needsRecovery,
        };
    });
}

module.exports = { readRawCounter, readFileCounter, parseRaw, RAW_LENGTH };

if (require.main === module) {
    const args = process.argv.slice(2);
    const opts = {};
    let disk,
        file = false;
    for (let i = 0; i < args.length; i++) {
        if (args[i] === "--format") opts.format = args[++i];
        else if (args[i] === "--snapshot") opts.snapshot = args[++i];
        else if (args[i] === "--file") file = true;
        else if (!disk && !args[i].startsWith("--")) disk = args[i];
        else {
            process.stderr.write(`counter.cjs: unknown argument ${args[i]}\n`);
            process.exit(2);
        }
    }
    if (!disk) {
        process.stderr.write("usage: node counter.cjs DISK [--format qcow2|raw] [--snapshot NAME] [--file]\n");
        process.exit(2);
    }
    try {
        process.stdout.write(JSON.stringify(file ? readFileCounter(disk, opts) : readRawCounter(disk, opts)) + "\n");
    } catch (e) {
        process.stderr.write(`counter.cjs: ${e.stderr ? String(e.stderr).trim() : e.message}\n`);
        process.exit(1);
    }
}
