#!/usr/bin/env node
// Generates the lab's "writer" boot sector: 512 bytes of 16-bit real-mode code
// that SeaBIOS loads at 0000:7C00. The guest loops forever:
//   counter += 1
//   write one sector { "LABCOUNT", counter (u32 LE), zeros } at
//       LBA = FIRST_LBA + (counter mod SLOTS) * STRIDE      (BIOS int 13h AH=43h)
//   sleep ~0.5 s (9 BIOS ticks; HLT between ticks so the vCPU costs no host CPU)
// Each write lands in a fresh 64 KiB cluster, so qcow2 allocations and dirty
// bitmaps grow while the guest runs. At boot it first scans every slot (AH=42h)
// and continues from the highest counter found, so the on-disk counter is
// monotonic across cold boots and drops back only when the disk itself is reverted.
//
// The bytes are hand-encoded (the listing is in the comments); this script only
// lays them out and resolves label addresses, so the output is deterministic.
// Check the encoding with: objdump -D -b binary -m i8086 --adjust-vma=0x7c00 OUT.bin
//
// Usage: node bootsector.cjs OUT.bin [LAYOUT.json]
//   LAYOUT.json describes where the counter lands (read by lab.sh into lab.json).
"use strict";
const fs = require("node:fs");

const ORG = 0x7c00;
const BUF = 0x0600; // sector buffer in free low memory (0x0600..0x07FF)
const BIOS_TICKS = 0x046c; // BIOS tick counter (18.2 Hz), DS=0
const TICKS = 9; // 9 / 18.2 Hz = 0.49 s
const LAYOUT = {
    magic: "LABCOUNT",
    counterOffset: 8, // u32 little endian after the magic
    firstLba: 2048,
    strideSectors: 128, // 64 KiB: one qcow2 cluster / bitmap granule per write
    // 64 MiB disk = 131072 sectors; 2048 + 1007*128 + 1 <= 131072. (1024 slots would run off the end.)
    slots: 1008,
    sectorSize: 512,
    intervalMs: Math.round((TICKS / 18.2065) * 1000),
};

const out = []; // bytes
const labels = {};
const fixups = []; // { at, label, kind: "rel8" | "rel16" | "abs16", end }

const b = (...bytes) => out.push(...bytes);
const w16 = (v) => b(v & 0xff, (v >> 8) & 0xff);
const w32 = (v) => b(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
const ascii4 = (s) => b(...Buffer.from(s, "latin1"));
const label = (name) => {
    labels[name] = out.length;
};
// Placeholders resolved after layout. Relative jumps count from the end of the instruction.
const rel8 = (name) => {
    fixups.push({ at: out.length, label: name, kind: "rel8", end: out.length + 1 });
    b(0);
};
const rel16 = (name) => {
    fixups.push({ at: out.length, label: name, kind: "rel16", end: out.length + 2 });
    w16(0);
};
const abs16 = (name, add = 0) => {
    fixups.push({ at: out.length, label: name, kind: "abs16", add });
    w16(0);
};

// ---- code -------------------------------------------------------------------
label("start");
b(0xfa); // cli
b(0x31, 0xc0); // xor ax, ax
b(0x8e, 0xd8); // mov ds, ax
b(0x8e, 0xc0); // mov es, ax
b(0x8e, 0xd0); // mov ss, ax
b(0xbc);
w16(ORG); // mov sp, 0x7C00
b(0xfb); // sti
b(0xfc); // cld
b(0xea);
abs16("cs0");
w16(0); // jmp 0000:cs0        (normalise CS in case of 07C0:0000)
label("cs0");
b(0x88, 0x16);
abs16("drive"); // mov [drive], dl     (boot drive from the BIOS)

// Scan all slots for the highest counter already on disk.
b(0xc7, 0x06);
abs16("slot");
w16(0); // mov word [slot], 0
label("scan");
b(0x66, 0x0f, 0xb7, 0x06);
abs16("slot"); // movzx eax, word [slot]
b(0xe8);
rel16("set_lba"); // call set_lba
b(0xb4, 0x42); // mov ah, 0x42        (extended read)
b(0xe8);
rel16("disk"); // call disk
b(0x72);
rel8("next"); // jc next
b(0x66, 0x81, 0x3e);
w16(BUF);
ascii4("LABC"); // cmp dword [BUF], 'LABC'
b(0x75);
rel8("next"); // jne next
b(0x66, 0x81, 0x3e);
w16(BUF + 4);
ascii4("OUNT"); // cmp dword [BUF+4], 'OUNT'
b(0x75);
rel8("next"); // jne next
b(0x66, 0xa1);
w16(BUF + 8); // mov eax, [BUF+8]
b(0x66, 0x3b, 0x06);
abs16("counter"); // cmp eax, [counter]
b(0x76);
rel8("next"); // jbe next
b(0x66, 0xa3);
abs16("counter"); // mov [counter], eax
label("next");
b(0xff, 0x06);
abs16("slot"); // inc word [slot]
b(0x81, 0x3e);
abs16("slot");
w16(LAYOUT.slots); // cmp word [slot], SLOTS
b(0x72);
rel8("scan"); // jb scan

// Sector buffer: zeros, then the magic.
b(0xbf);
w16(BUF); // mov di, BUF
b(0xb9);
w16(256); // mov cx, 256
b(0x31, 0xc0); // xor ax, ax
b(0xf3, 0xab); // rep stosw
b(0x66, 0xc7, 0x06);
w16(BUF);
ascii4("LABC"); // mov dword [BUF], 'LABC'
b(0x66, 0xc7, 0x06);
w16(BUF + 4);
ascii4("OUNT"); // mov dword [BUF+4], 'OUNT'

label("main");
b(0x66, 0xa1);
abs16("counter"); // mov eax, [counter]
b(0x66, 0x40); // inc eax
b(0x66, 0xa3);
abs16("counter"); // mov [counter], eax
b(0x66, 0xa3);
w16(BUF + 8); // mov [BUF+8], eax
b(0x66, 0x31, 0xd2); // xor edx, edx
b(0x66, 0xb9);
w32(LAYOUT.slots); // mov ecx, SLOTS
b(0x66, 0xf7, 0xf1); // div ecx             (edx = counter mod SLOTS)
b(0x66, 0x89, 0xd0); // mov eax, edx
b(0xe8);
rel16("set_lba"); // call set_lba
b(0xb4, 0x43); // mov ah, 0x43        (extended write)
b(0xe8);
rel16("disk"); // call disk
b(0x73);
rel8("wait0"); // jnc wait0
b(0xff, 0x06);
abs16("errors"); // inc word [errors]   (visible in a memory dump only)
label("wait0");
b(0x8b, 0x1e);
w16(BIOS_TICKS); // mov bx, [0x046C]
label("wait");
b(0xfb); // sti
b(0xf4); // hlt                 (sleep until the next IRQ)
b(0xa1);
w16(BIOS_TICKS); // mov ax, [0x046C]
b(0x29, 0xd8); // sub ax, bx
b(0x83, 0xf8, TICKS); // cmp ax, TICKS
b(0x72);
rel8("wait"); // jb wait
b(0xe9);
rel16("main"); // jmp main

// set_lba: eax = slot -> dap.lba = FIRST_LBA + slot * STRIDE, dap.count = 1
label("set_lba");
b(0x66, 0xc1, 0xe0, Math.log2(LAYOUT.strideSectors)); // shl eax, 7
b(0x66, 0x05);
w32(LAYOUT.firstLba); // add eax, FIRST_LBA
b(0x66, 0xa3);
abs16("dap", 8); // mov [dap.lba], eax  (high dword stays 0)
b(0xc7, 0x06);
abs16("dap", 2);
w16(1); // mov word [dap.count], 1 (the BIOS rewrites it)
b(0xc3); // ret

// disk: ah = function; int 13h with DS:SI = dap, DL = boot drive. CF = error.
label("disk");
b(0xb0, 0x00); // mov al, 0           (write: no verify)
b(0x8a, 0x16);
abs16("drive"); // mov dl, [drive]
b(0xbe);
abs16("dap"); // mov si, dap
b(0xcd, 0x13); // int 0x13
b(0xc3); // ret

// ---- data -------------------------------------------------------------------
label("dap"); // disk address packet
b(0x10, 0x00); //   size 16, reserved
w16(1); //   sector count
w16(BUF);
w16(0); //   buffer offset, segment
w32(0);
w32(0); //   LBA (64 bit)
label("drive");
b(0);
label("slot");
w16(0);
label("counter");
w32(0);
label("errors");
w16(0);

// ---- resolve ----------------------------------------------------------------
for (const f of fixups) {
    if (!(f.label in labels)) throw new Error(`undefined label ${f.label}`);
    const target = labels[f.label];
    if (f.kind === "abs16") {
        const v = ORG + target + f.add;
        out[f.at] = v & 0xff;
        out[f.at + 1] = v >> 8;
    } else if (f.kind === "rel16") {
        const d = (target - f.end) & 0xffff;
        out[f.at] = d & 0xff;
        out[f.at + 1] = d >> 8;
    } else {
        const d = target - f.end;
        if (d < -128 || d > 127) throw new Error(`short jump to ${f.label} out of range (${d})`);
        out[f.at] = d & 0xff;
    }
}
if (out.length > 510) throw new Error(`boot code is ${out.length} bytes, more than 510`);
const sector = Buffer.alloc(512);
Buffer.from(out).copy(sector);
sector[510] = 0x55; // boot signature
sector[511] = 0xaa;

const [outPath, layoutPath] = process.argv.slice(2);
if (!outPath) {
    process.stderr.write("usage: bootsector.cjs OUT.bin [LAYOUT.json]\n");
    process.exit(2);
}
fs.writeFileSync(outPath, sector);
if (layoutPath) fs.writeFileSync(layoutPath, JSON.stringify(LAYOUT) + "\n");
